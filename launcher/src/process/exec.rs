//! The command's last steps before execve: identity, capabilities,
//! no_new_privs, seccomp, and the PATH lookup with docker's exit codes.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::CapsHashSet;
use nix::errno::Errno;

use super::confine::{Confinement, Filter};
use super::init::Failure;
use super::{encode_error, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::spec::ContainerSpec;

/// Runs in the forked command process; never returns.
pub fn exec_command(spec: &ContainerSpec, status_w: OwnedFd) -> ! {
    let Err(Failure(code, message)) = prepare_and_exec(spec);
    let _ = nix::unistd::write(&status_w, &encode_error(code, &message));
    std::process::exit(code)
}

fn setup(message: impl std::fmt::Display) -> Failure {
    Failure::setup(message)
}

fn prepare_and_exec(spec: &ContainerSpec) -> Result<std::convert::Infallible, Failure> {
    let id = &spec.identity;
    let (uid, gid) = (id.container_uid(), id.container_gid());
    let mut env = spec.process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(uid)));
    }
    let keep: CapsHashSet = if uid == 0 {
        spec.root_capabilities.iter().copied().collect()
    } else {
        CapsHashSet::new()
    };
    Confinement {
        // Remapped, the groups were set by init before the user namespace.
        groups: (id.privileged && !id.remap_root).then_some(&id.host_groups[..]),
        ids: Some((uid, gid)),
        capabilities: &keep,
        // Set by init before it forked this process.
        filter: Filter::Inherited,
    }
    .apply()
    .map_err(setup)?;
    nix::unistd::chdir(&spec.process.cwd).map_err(|e| {
        setup(format!(
            "cannot enter working directory {}: {e}",
            spec.process.cwd.display()
        ))
    })?;

    let program = resolve_command(&spec.process.args[0], &env)?;
    let c_program = cstring(program.as_os_str().as_encoded_bytes())?;
    let c_args = spec
        .process
        .args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env
        .iter()
        .map(|e| cstring(e.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;

    // The container's terminal, inherited from berth: this process's copy
    // is its own (exec closes it; stdio keeps the terminal).
    // SAFETY: the terminal's descriptor was inherited from init, which
    // hands it on and keeps no owner of this process's copy.
    #[allow(unsafe_code)]
    let _terminal = spec.terminal.map(|fd| unsafe { crate::sys::take_fd(fd) });
    if let Some(fd) = &_terminal {
        super::terminal::take_terminal(std::os::fd::AsFd::as_fd(fd))
            .map_err(|e| setup(format!("cannot take the container's terminal: {e}")))?;
    }
    // no_new_privs and the seccomp filter were set by init and are inherited.
    crate::sys::cloexec_from(3)
        .map_err(|e| setup(format!("cannot close inherited descriptors: {e}")))?;
    crate::sys::reset_signal_dispositions();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let err = nix::unistd::execve(&c_program, &c_args, &c_env).unwrap_err();
    Err(exec_failure(&spec.process.args[0], err))
}

fn cstring(bytes: &[u8]) -> Result<CString, Failure> {
    CString::new(bytes).map_err(|_| setup("an argument or variable contains a NUL byte"))
}

fn exec_failure(command: &str, err: Errno) -> Failure {
    match err {
        Errno::ENOENT => Failure(
            EXIT_NOT_FOUND,
            format!("{command}: no such file or directory in the image"),
        ),
        _ => Failure(
            EXIT_NOT_EXECUTABLE,
            format!("{command}: cannot execute: {}", err.desc()),
        ),
    }
}

/// Finds the program to run: a path as given, or the first executable match
/// in the container's PATH.
fn resolve_command(command: &str, env: &[String]) -> Result<PathBuf, Failure> {
    if command.is_empty() {
        return Err(Failure(EXIT_NOT_FOUND, "empty command".into()));
    }
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut not_executable = None;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(command);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        not_executable.get_or_insert((candidate, meta.permissions().mode()));
    }
    match not_executable {
        Some((path, mode)) => Err(Failure(
            EXIT_NOT_EXECUTABLE,
            format!(
                "{command}: {} is not executable (mode {:o})",
                path.display(),
                mode & 0o7777
            ),
        )),
        None => Err(Failure(
            EXIT_NOT_FOUND,
            format!("{command}: command not found in the image (PATH={path_var})"),
        )),
    }
}

/// The home directory of `uid` from the image's /etc/passwd, or `/`.
fn home_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
        })
        .next()
        .unwrap_or_else(|| if uid == 0 { "/root".into() } else { "/".into() })
}
