//! Starting a container and waiting for it.
//!
//! Three processes take part:
//! - **berth** (outside) clones the container's init into new namespaces,
//!   writes its user namespace maps, forwards signals to it and exits with
//!   the command's status;
//! - **init** (pid 1 inside, [`init`]) builds the root filesystem, enters the
//!   container's user namespace, forks the command, reaps zombies, forwards
//!   signals, and exits with the command's status; it dies with berth;
//! - **the command** ([`exec`]) takes the container identity, capabilities,
//!   no_new_privs and seccomp, and execs.
//!
//! A status pipe carries setup errors from inside to berth: it reaches EOF
//! with no message exactly when the command was exec'd.

pub mod confine;
pub mod exec;
pub mod init;
pub mod join;
pub mod keeper;
pub(crate) mod signals;
pub mod terminal;

use std::io::Read;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, Pid};

use crate::idmap::{self, UserNsMaps};
use crate::limits::cgroup::ContainerCgroup;
use crate::spec::ContainerSpec;
use crate::sys;

/// Exit code for berth's own failures (as docker and runc use it).
pub const EXIT_BERTH_ERROR: i32 = 125;
/// Exit code when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Why a container did not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Setup inside the container failed, or the command could not be executed.
    #[error("{message}")]
    Start {
        /// The exit code berth should use.
        code: i32,
        /// What went wrong, for the user.
        message: String,
    },
    /// Something failed on the outside.
    #[error("{0}")]
    Host(String),
}

impl RunError {
    /// The exit code berth should use.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Start { code, .. } => *code,
            RunError::Host(_) => EXIT_BERTH_ERROR,
        }
    }
}

fn host_err(what: &str) -> impl FnOnce(nix::Error) -> RunError + '_ {
    move |e| RunError::Host(format!("{what}: {e}"))
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The command's exit code (128+N when signal N killed it).
    pub code: i32,
    /// Processes the kernel's OOM killer killed in the container's cgroup.
    pub oom_kills: u64,
}

/// Runs the container described by `spec` to completion. With a
/// `terminal` (whose slave is `spec.terminal`), berth relays its own
/// terminal to the container's.
///
/// Must be called while the process is single-threaded.
pub fn run(spec: &ContainerSpec, terminal: Option<terminal::Terminal>) -> Result<Exit, RunError> {
    let cgroup = spec
        .cgroup
        .as_ref()
        .map(ContainerCgroup::for_spec)
        .transpose()
        .map_err(|e| RunError::Host(e.to_string()))?;
    let plan = idmap::plan(&spec.identity);
    let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC).map_err(host_err("cannot create a pipe"))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(host_err("cannot create a pipe"))?;
    let old_mask = signals::block_forwarded().map_err(host_err("cannot block signals"))?;

    // The cgroup namespace is made by init once berth has moved it into the
    // container's cgroup, so that cgroup is the root the container sees.
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if plan.outer.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    if spec.own_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let child = match clone_child(flags, cgroup.as_ref()) {
        Ok(None) => {
            drop(status_r);
            drop(sync_w);
            init::container_init(spec, &plan, status_w, sync_r)
        }
        Ok(Some(pid)) => pid,
        Err(e) => {
            let _ = old_mask.restore();
            return Err(e);
        }
    };
    drop(status_w);
    drop(sync_r);
    let master = terminal.map(|t| t.master); // the slave is the container's alone
    let result = start(child, &plan, status_r, &sync_w).and_then(|()| match master {
        Some(master) => terminal::relay_until_exit(child, master),
        None => signals::wait_forwarding(child),
    });
    if result.is_err() {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    drop(sync_w);
    let _ = old_mask.restore();
    let oom_kills = cgroup.as_ref().map_or(0, |cg| cg.oom_kills());
    drop(cgroup); // kills anything left and removes the cgroup
    result.map(|code| Exit { code, oom_kills })
}

/// Forks the container's first process into new namespaces and into
/// `cgroup`: on v2 it is born there (clone3), else it is moved in before
/// this returns (a child that cannot be placed is killed). `None` in the
/// child, which must wait for the parent's go-ahead before doing anything.
fn clone_child(
    flags: CloneFlags,
    cgroup: Option<&ContainerCgroup>,
) -> Result<Option<Pid>, RunError> {
    use std::os::fd::AsFd;
    let namespaces_failed =
        |e: nix::Error| RunError::Host(format!("cannot create the container's namespaces: {e}"));
    if let Some(dir) = cgroup.and_then(ContainerCgroup::open_v2_dir) {
        // SAFETY: berth starts containers while single-threaded (the
        // registry's threads are gone by then).
        #[allow(unsafe_code)]
        let cloned = unsafe { sys::clone_into_cgroup(flags, dir.as_fd()) };
        match cloned {
            Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG) => {} // before Linux 5.7
            cloned => {
                if let Ok(Some(pid)) = cloned {
                    tracing::debug!(%pid, "the container's first process is born in its cgroup (clone3)");
                }
                return cloned.map_err(namespaces_failed);
            }
        }
    }
    // SAFETY: as above, single-threaded.
    #[allow(unsafe_code)]
    let cloned = unsafe { sys::clone_into_namespaces(flags) }.map_err(namespaces_failed)?;
    if let (Some(pid), Some(cg)) = (cloned, cgroup) {
        if let Err(e) = cg.add_process(pid.as_raw() as u32) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(RunError::Host(e.to_string()));
        }
    }
    Ok(cloned)
}

/// The outside half of start-up: write maps when asked, until the status pipe
/// closes (the command runs) or carries an error.
fn start(
    child: Pid,
    plan: &idmap::MapPlan,
    status_r: OwnedFd,
    sync_w: &OwnedFd,
) -> Result<(), RunError> {
    if let Some(outer) = &plan.outer {
        write_maps(child, outer)?;
    }
    nix::unistd::write(sync_w, b"G").map_err(host_err("cannot signal the container"))?;
    let mut status = std::fs::File::from(status_r);
    let mut byte = [0u8; 1];
    loop {
        let n = status
            .read(&mut byte)
            .map_err(|e| RunError::Host(format!("cannot read the container's status: {e}")))?;
        match (n, byte[0]) {
            (0, _) => return Ok(()),
            (_, b'M') => {
                write_maps(child, &plan.inner)?;
                nix::unistd::write(sync_w, b"G")
                    .map_err(host_err("cannot signal the container"))?;
            }
            (_, b'E') => {
                let mut rest = Vec::new();
                let _ = status.read_to_end(&mut rest);
                let (code, message) = decode_error(&rest);
                let _ = waitpid(child, None);
                return Err(RunError::Start { code, message });
            }
            (_, other) => {
                return Err(RunError::Host(format!(
                    "unexpected status byte {other:#x} from the container"
                )))
            }
        }
    }
}

/// Writes a user namespace's maps for process `pid` (from its parent namespace).
fn write_maps(pid: Pid, maps: &UserNsMaps) -> Result<(), RunError> {
    maps.write_to(&std::path::Path::new("/proc").join(pid.to_string()))
        .map_err(|e| RunError::Host(format!("{e} for the container")))
}

/// Encodes an error for the status pipe: `E`, the exit code, the message.
pub(crate) fn encode_error(code: i32, message: &str) -> Vec<u8> {
    let mut out = vec![b'E', code.clamp(0, 255) as u8];
    out.extend_from_slice(message.as_bytes());
    out
}

pub(crate) fn decode_error(rest: &[u8]) -> (i32, String) {
    match rest.split_first() {
        Some((code, message)) => (*code as i32, String::from_utf8_lossy(message).into_owned()),
        None => (
            EXIT_BERTH_ERROR,
            "the container failed to start".to_string(),
        ),
    }
}

/// Reaps `pid` if it has exited, without blocking: its exit code (128+N
/// when killed by signal N).
pub(crate) fn try_reap(pid: Pid) -> std::io::Result<Option<i32>> {
    Ok(crate::sys::reap_child(pid, false)?.and_then(crate::sys::ChildEnd::exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let encoded = encode_error(127, "sh: not found");
        assert_eq!(encoded[0], b'E');
        assert_eq!(
            decode_error(&encoded[1..]),
            (127, "sh: not found".to_string())
        );
        assert_eq!(decode_error(&[]).0, EXIT_BERTH_ERROR);
    }

    #[test]
    fn exit_codes_follow_the_shell_real_time_signals_included() {
        use crate::sys::ChildEnd;
        assert_eq!(ChildEnd::Exited(3).exit_code(), Some(3));
        assert_eq!(ChildEnd::Signaled(9).exit_code(), Some(137));
        assert_eq!(ChildEnd::Signaled(40).exit_code(), Some(168));
        assert_eq!(ChildEnd::TraceStopped.exit_code(), None);
    }

    /// nix's waitpid reaps a child killed by a real-time signal and then
    /// fails (it has no `Signal` for it): the end was lost.
    #[test]
    fn a_child_killed_by_a_real_time_signal_is_reaped_with_its_signal() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let rt = libc::SIGRTMIN() + 6;
        crate::sys::send_signal(pid, rt).unwrap();
        let end = crate::sys::reap_child(pid, true).unwrap();
        assert_eq!(end, Some(crate::sys::ChildEnd::Signaled(rt)));
        // Already reaped: std's handle has nothing left to wait for.
        assert!(child.try_wait().is_err());
    }
}
