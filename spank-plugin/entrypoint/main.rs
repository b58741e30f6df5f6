//! `berth-entrypoint`: the command an image's entrypoint is given when a
//! step runs with `--container-entrypoint` (as pyxis runs it: once, when
//! the step's container starts). An entrypoint ends with `exec "$@"`; this
//! program, exec'd there, writes the working directory and environment
//! the entrypoint left into the plugin's memfd named `berth-entrypoint-env`
//! (which it inherited) and exits 0. The tasks then take both.
//!
//! The plugin runs it from a memfd through the container's /proc
//! (`/proc/self/fd/N`); statically linked, it runs in any image, with or
//! without a C library, as the job's user with no_new_privs and the
//! seccomp filter in force.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::exit;

/// The name the plugin gives the memfd the environment goes to.
const ENV_MEMFD: &[u8] = b"/memfd:berth-entrypoint-env";

fn main() {
    let Some(mut out) = inherited_env_memfd() else {
        eprintln!("berth: berth-entrypoint is run by the Slurm plugin only");
        exit(125);
    };
    // Where it runs first (the tasks start there, as in pyxis), then each
    // variable; every record ends in a NUL byte.
    let mut text = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        text.extend_from_slice(dir.as_os_str().as_bytes());
    }
    text.push(0);
    for (name, value) in std::env::vars_os() {
        text.extend_from_slice(name.as_bytes());
        text.push(b'=');
        text.extend_from_slice(value.as_bytes());
        text.push(0);
    }
    if out.write_all(&text).is_err() {
        eprintln!("berth: berth-entrypoint cannot write the environment");
        exit(125);
    }
}

/// The inherited descriptor of the plugin's memfd, found by its name.
fn inherited_env_memfd() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.as_os_str().as_bytes().starts_with(ENV_MEMFD) {
            continue;
        }
        let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
        // SAFETY: `fd` is open in this process (listed in /proc/self/fd),
        // not used elsewhere in this program, which only writes to it.
        #[allow(unsafe_code)]
        return Some(unsafe { std::fs::File::from_raw_fd(fd) });
    }
    None
}
