//! The keeper of a Slurm step's container: a small process that owns the
//! container's mount, pid, ipc, uts and cgroup namespaces (with the root
//! filesystem built inside) so that every task of the step can join them with
//! `setns`. It is the pid namespace's init: tasks are forked into the
//! namespace (the plugin's `relay`), orphans are reaped here, and when the
//! keeper ends so does every process left in the container. Its /proc
//! (the pid namespace's own) hides root's processes. It exits when the
//! process it watches (the step's slurmstepd) is gone or when it is sent
//! SIGKILL at the end of the step.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::unistd::{pipe2, Pid};

use super::{decode_error, encode_error, RunError, EXIT_BERTH_ERROR};
use crate::limits::cgroup::ContainerCgroup;
use crate::rootfs;
use crate::spec::{ContainerSpec, StepViewSpec};
use crate::sys;
use crate::syscall::LinuxSyscall;

/// What a keeper holds.
pub enum Kept<'a> {
    /// A new container, built from its spec in new namespaces.
    Container(&'a ContainerSpec),
    /// A step's view into the named container whose keeper is `join` (a
    /// pidfd): its ipc and uts namespaces, a copy of its mount namespace.
    StepView {
        /// The named container's keeper.
        join: &'a OwnedFd,
        /// What this step sees differently.
        view: &'a StepViewSpec,
    },
}

/// Starts a keeper of `kept` that lives as long as process `watch` does (or
/// until it is killed, without `watch`), and returns its pid once the
/// container is ready; the keeper first closes its copies of `close_first`.
/// Must be called while single-threaded, by root.
pub fn spawn_keeper(
    kept: Kept,
    watch: Option<Pid>,
    cgroup: Option<&ContainerCgroup>,
    close_first: &[std::os::fd::RawFd],
) -> Result<Pid, RunError> {
    let watch_fd = watch
        .map(|pid| {
            sys::pidfd_open(pid)
                .map_err(|e| RunError::Host(format!("cannot watch process {pid}: {e}")))
        })
        .transpose()?;
    let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| RunError::Host(format!("cannot create a pipe: {e}")))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| RunError::Host(format!("cannot create a pipe: {e}")))?;
    // The cgroup namespace is made by the keeper once it is in the
    // container's cgroup (see process::run). A step view stays in the host's
    // pid namespace: the step's tasks join the named container's pid
    // namespace from its own keeper (the record's `pid_namespace`), so that
    // a view keeper, once ended, is nothing the container's init waits for.
    match super::clone_child(clone_flags(&kept), cgroup)? {
        None => {
            drop(status_r);
            drop(sync_w);
            // The spawner's locks (a named container's): a keeper holding
            // a copy would keep them held after its spawner is killed.
            for fd in close_first {
                let _ = nix::unistd::close(*fd);
            }
            keeper_main(kept, status_w, sync_r, watch_fd)
        }
        Some(pid) => {
            drop(status_w);
            drop(sync_r);
            let _ = nix::unistd::write(&sync_w, b"G");
            drop(sync_w);
            let mut status = std::fs::File::from(status_r);
            let mut reply = Vec::new();
            let _ = status.read_to_end(&mut reply);
            let started = started_from(&reply);
            if started.is_err() {
                let _ = crate::sys::reap_child(pid, true);
            }
            started.map(|()| pid)
        }
    }
}

/// What a keeper's status pipe said: `R` ready; `E<code><message>` a setup
/// failure; nothing (EOF) it died before it could say.
fn started_from(reply: &[u8]) -> Result<(), RunError> {
    match reply.split_first() {
        Some((b'R', _)) => Ok(()),
        Some((b'E', rest)) => {
            let (code, message) = decode_error(rest);
            Err(RunError::Start { code, message })
        }
        _ => Err(RunError::Host(
            "the container keeper died while starting".into(),
        )),
    }
}

/// The namespaces a keeper is cloned with: a new container gets new mount,
/// pid, ipc and uts namespaces (its cgroup namespace comes once it is in its
/// cgroup); a step view joins the named container's itself.
fn clone_flags(kept: &Kept) -> CloneFlags {
    match kept {
        Kept::Container(spec) => {
            let network = match spec.own_network {
                true => CloneFlags::CLONE_NEWNET,
                false => CloneFlags::empty(),
            };
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | network
        }
        Kept::StepView { .. } => CloneFlags::empty(),
    }
}

/// Waits until the process `watch` (a pidfd) has ended.
fn wait_until_gone(watch: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return, // the watched process exited (or poll failed)
        }
    }
}

fn keeper_main(kept: Kept, status_w: OwnedFd, sync_r: OwnedFd, watch: Option<OwnedFd>) -> ! {
    let _ = nix::unistd::setsid();
    let fail = |message: String| -> ! {
        let _ = nix::unistd::write(&status_w, &encode_error(EXIT_BERTH_ERROR, &message));
        std::process::exit(EXIT_BERTH_ERROR)
    };
    let mut go = [0u8; 1];
    if !matches!(std::fs::File::from(sync_r).read(&mut go), Ok(1)) {
        std::process::exit(EXIT_BERTH_ERROR); // the helper is gone
    }
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP) {
        fail(format!(
            "cannot create the container's cgroup namespace: {e}"
        ));
    }
    let is_dir = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.is_dir());
    let built = match kept {
        Kept::Container(spec) => rootfs::prepare(&LinuxSyscall, spec, &is_dir),
        Kept::StepView { join, view } => {
            let sources = rootfs::view::open_sources(&LinuxSyscall, view, &is_dir)
                .unwrap_or_else(|e| fail(e.to_string()));
            let joined = nix::sched::setns(
                join,
                CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWIPC
                    | CloneFlags::CLONE_NEWUTS
                    | CloneFlags::CLONE_NEWNET,
            )
            .and_then(|()| nix::sched::unshare(CloneFlags::CLONE_NEWNS));
            if let Err(e) = joined {
                fail(format!("cannot enter the named container: {e}"));
            }
            rootfs::view::build(&LinuxSyscall, view, sources)
        }
    };
    if let Err(e) = built {
        fail(e.to_string());
    }
    // Nothing of the helper's stdio may stay open: whoever reads its output
    // waits for EOF.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    // The container's init reaps the orphans the kernel hands it at once
    // (an ignored SIGCHLD leaves no zombie); nothing is waited for from here on.
    sys::reap_children_automatically();
    let _ = nix::unistd::write(&status_w, b"R");
    drop(status_w);
    let Some(watch) = watch else {
        loop {
            nix::unistd::pause(); // a named container: ended by the job epilog
        }
    };
    wait_until_gone(&watch);
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keeper_is_ready_or_says_why_not() {
        assert!(started_from(b"R").is_ok());
        match started_from(&super::super::encode_error(125, "image not found")) {
            Err(RunError::Start { code, message }) => {
                assert_eq!((code, message.as_str()), (125, "image not found"))
            }
            other => panic!("{other:?}"),
        }
        // Died before saying anything (killed, or the helper's end).
        let died = started_from(b"").unwrap_err();
        assert!(died.to_string().contains("died while starting"), "{died}");
    }

    #[test]
    fn a_view_is_born_in_no_namespace_of_its_own() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let view = crate::spec::StepViewSpec {
            devices: Default::default(),
            mounts: vec![],
            tmpfs_mounts: vec![],
            tasks: Default::default(),
            identity: crate::spec::Identity::job_user(1000),
            cgroup: None,
            read_only: false,
        };
        let kept = Kept::StepView {
            join: &r,
            view: &view,
        };
        assert_eq!(clone_flags(&kept), CloneFlags::empty());
    }

    /// The keeper of an unnamed container ends with the step's slurmstepd.
    #[test]
    fn the_wait_ends_when_the_watched_process_does() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let watch = sys::pidfd_open(Pid::from_raw(child.id() as i32)).unwrap();
        let waiter = std::thread::spawn(move || wait_until_gone(&watch));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "returned while the process ran");
        child.kill().unwrap();
        child.wait().unwrap();
        waiter.join().unwrap();
    }
}
