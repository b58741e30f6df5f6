//! `berth-entrypoint`: runs a Slurm task through its image's entrypoint
//! (`--container-entrypoint`).
//!
//! Slurm execs a task's own argv and a plugin cannot make that list longer,
//! so the plugin puts this program (statically linked: it runs inside any
//! image, with or without a C library) in argv[0]'s place, from a memfd. It
//! reads the entrypoint and the replaced argv[0] from the environment, drops
//! both variables and execs `ENTRYPOINT... ARGV0 ARGS...`, the way Docker
//! joins an image's Entrypoint and a command. It runs as the job's user,
//! with no_new_privs and the seccomp filter already in force.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// The image's Entrypoint, its elements separated by ASCII unit separators.
const ENTRYPOINT_VAR: &str = "BERTH_ENTRYPOINT";
/// The task's argv[0] before the plugin replaced it.
const ARGV0_VAR: &str = "BERTH_ARGV0";
const SEPARATOR: u8 = 0x1f;

fn main() {
    let (Some(entrypoint), Some(argv0)) = (
        std::env::var_os(ENTRYPOINT_VAR),
        std::env::var_os(ARGV0_VAR),
    ) else {
        eprintln!("berth: berth-entrypoint is started by the Slurm plugin only");
        exit(125);
    };
    let entrypoint: Vec<OsString> = entrypoint
        .as_bytes()
        .split(|b| *b == SEPARATOR)
        .map(|part| OsString::from_vec(part.to_vec()))
        .collect();
    let program = &entrypoint[0];
    let error = Command::new(program)
        .args(&entrypoint[1..])
        .arg(argv0)
        .args(std::env::args_os().skip(1))
        .env_remove(ENTRYPOINT_VAR)
        .env_remove(ARGV0_VAR)
        .exec();
    eprintln!(
        "berth: cannot run the image's entrypoint {}: {error}",
        program.to_string_lossy()
    );
    exit(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    });
}
