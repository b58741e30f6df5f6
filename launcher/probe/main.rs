//! `berth-verify-probe`: what `berth verify` runs inside a container, as the
//! container's user, to see the container from within. Statically linked
//! (built by build.rs): it runs in any image. It prints one fact per line,
//! fields separated by tabs:
//!
//!     id      UID GID
//!     map     uid|gid FIRST-LINE-OF-THE-MAP
//!     status  NAME VALUE          (CapEff, CapBnd, NoNewPrivs, Seccomp)
//!     dev     NAME MAJOR:MINOR    (character devices named nvidia*)
//!     write   PATH ok|ERROR       (for each --write PATH: creating the file
//!                                  .berth-verify-TOKEN there, left for berth
//!                                  verify to look for on the host)
//!     found   NAME PATH ok|ERROR  (for --find PREFIX: each file whose name
//!                                  starts with PREFIX, anywhere but /proc
//!                                  and /sys, and whether it can be read;
//!                                  for --open PATH...: each one there)

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

extern "C" {
    fn prctl(option: i32, arg: u64, ...) -> i32;
}

fn main() {
    // Not dumpable: no other process of the user can open this one's
    // /proc files (its output) or trace it.
    // SAFETY: PR_SET_DUMPABLE (4) with 0 changes only this process's flag.
    unsafe { prctl(4, 0) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    println!("id\t{}\t{}", field("Uid").split_whitespace().next().unwrap_or(""), field("Gid").split_whitespace().next().unwrap_or(""));
    for map in ["uid", "gid"] {
        let text = std::fs::read_to_string(format!("/proc/self/{map}_map")).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        println!("map\t{map}\t{}", lines.join(";"));
    }
    for name in ["CapEff", "CapBnd", "NoNewPrivs", "Seccomp"] {
        println!("status\t{name}\t{}", field(name));
    }
    if let Ok(entries) = std::fs::read_dir("/dev") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
            if name.starts_with("nvidia") && meta.file_type().is_char_device() {
                let rdev = meta.rdev();
                let (major, minor) = (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff), (rdev & 0xff) | ((rdev >> 12) & !0xff));
                println!("dev\t{name}\t{major}:{minor}");
            }
        }
    }
    let mut mode = "";
    let mut token = String::from("0");
    for arg in &args {
        match arg.as_str() {
            "--token" | "--write" | "--find" | "--open" => mode = arg,
            path => match mode {
                "--token" => token = path.to_string(),
                "--write" => {
                    let probe = format!("{}/.berth-verify-{token}", path.trim_end_matches('/'));
                    let result = std::fs::File::create(&probe).map(|_| ());
                    println!("write\t{path}\t{}", outcome(result));
                }
                "--find" => find(Path::new("/"), path, 0),
                "--open" => {
                    // A marker at its own path, in a directory that may
                    // not be listed.
                    let name = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    match std::fs::File::open(path) {
                        Ok(_) => println!("found\t{name}\t{path}\tok"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => println!("found\t{name}\t{path}\t{}", outcome(Err(e))),
                    }
                }
                _ => {}
            },
        }
    }
}

/// Prints every file under `dir` whose name starts with `prefix` (not
/// following symlinks; the kernel's and the devices' trees are skipped).
fn find(dir: &Path, prefix: &str, depth: usize) {
    if depth > 64 || ["/proc", "/sys"].iter().any(|p| dir == Path::new(p)) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if name.starts_with(prefix) {
            let read = std::fs::File::open(&path).map(|_| ());
            println!("found\t{name}\t{}\t{}", path.display(), outcome(read));
        } else if kind.is_dir() {
            find(&path, prefix, depth + 1);
        }
    }
}

fn outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string().replace('\t', " "),
    }
}
