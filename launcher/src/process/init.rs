//! The container's init (pid 1): builds the root filesystem, enters the
//! container's user namespace, starts the command, then reaps and forwards
//! until the command exits. It dies with berth: a parent-death signal and a
//! pipe from berth that reads EOF when berth is gone.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use nix::unistd::{ForkResult, Gid, Pid};

use super::confine::{self, Confinement, Filter};
use super::signals::{forwarded_set, should_forward};
use super::{encode_error, exec, EXIT_BERTH_ERROR};
use crate::idmap::MapPlan;
use crate::rootfs;
use crate::spec::ContainerSpec;
use crate::syscall::LinuxSyscall;

/// A setup failure inside the container: exit code and message.
pub(crate) struct Failure(pub i32, pub String);

impl Failure {
    pub(crate) fn setup(message: impl std::fmt::Display) -> Failure {
        Failure(EXIT_BERTH_ERROR, message.to_string())
    }
}

/// Entry point of the cloned child. Never returns.
pub fn container_init(
    spec: &ContainerSpec,
    plan: &MapPlan,
    status_w: OwnedFd,
    sync_r: OwnedFd,
) -> ! {
    let code = match init(spec, plan, status_w, sync_r) {
        Ok(code) => code,
        Err((Failure(code, message), Some(status_w))) => {
            let _ = nix::unistd::write(&status_w, &encode_error(code, &message));
            code
        }
        Err((Failure(code, _), None)) => code,
    };
    std::process::exit(code)
}

type InitResult = Result<i32, (Failure, Option<OwnedFd>)>;

fn init(spec: &ContainerSpec, plan: &MapPlan, status_w: OwnedFd, sync_r: OwnedFd) -> InitResult {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut sync = std::fs::File::from(sync_r);
    macro_rules! fail {
        ($e:expr) => {
            return Err(($e, Some(status_w)))
        };
    }
    if let Err(f) = wait_go(&mut sync) {
        return Err((f, None)); // berth is gone: nobody to tell
    }
    // berth has put init in the container's cgroup (if it made one): that
    // cgroup becomes the root of the container's cgroup namespace.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWCGROUP) {
        fail!(Failure::setup(format!(
            "cannot create the container's cgroup namespace: {e}"
        )));
    }
    let is_dir = |p: &Path| std::fs::metadata(p).ok().map(|m| m.is_dir());
    if let Err(e) = rootfs::prepare(&LinuxSyscall, spec, &is_dir) {
        fail!(Failure::setup(e));
    }
    // With --remap-root the user's groups are taken here, while init may
    // still set any: inside, only the user's own gid is mapped, but the
    // kernel checks file access with all of them (setgroups is then denied
    // there, so none can be dropped).
    let id = &spec.identity;
    if id.privileged && id.remap_root {
        let groups: Vec<Gid> = id.host_groups.iter().map(|g| Gid::from_raw(*g)).collect();
        if let Err(e) = nix::unistd::setgroups(&groups) {
            fail!(Failure::setup(format!(
                "cannot set supplementary groups: {e}"
            )));
        }
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        fail!(Failure::setup(format!(
            "cannot create the container's user namespace: {e}"
        )));
    }
    if plan.inner_written_by_parent {
        if let Err(e) = nix::unistd::write(&status_w, b"M") {
            fail!(Failure::setup(format!("cannot ask for id maps: {e}")));
        }
        if let Err(f) = wait_go(&mut sync) {
            return Err((f, None));
        }
    } else if let Err(e) = plan.inner.write_to(Path::new("/proc/self")) {
        fail!(Failure::setup(format!("the container's {e}")));
    }
    // no_new_privs and the seccomp filter are set once here and inherited by
    // the command: init is confined too (an unconfined init of the same uid
    // could be ptraced into making syscalls for the command), and the filter
    // is loaded only once.
    if let Err(e) = confine::set_filter(spec.seccomp_program.as_deref()) {
        fail!(Failure::setup(e));
    }

    // A session of its own: the container never has its caller's terminal
    // as controlling terminal (TIOCSTI could type commands into the
    // caller's shell), and is not in the terminal's foreground group (berth
    // passes ^C and friends on). Not dumpable: the command, of the same
    // uid, cannot ptrace init (exec makes the command dumpable again).
    if let Err(e) = nix::unistd::setsid() {
        fail!(Failure::setup(format!("cannot start a new session: {e}")));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        fail!(Failure::setup(format!("cannot make init undumpable: {e}")));
    }
    // SAFETY: init is single-threaded.
    #[allow(unsafe_code)]
    let forked = unsafe { crate::sys::fork() };
    let command = match forked {
        Ok(ForkResult::Child) => exec::exec_command(spec, status_w),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => fail!(Failure::setup(format!("cannot fork the command: {e}"))),
    };
    drop(status_w);
    if let Some(fd) = spec.terminal {
        // The caller's terminal stays with berth: init lets go of it, and
        // of its copy of the container's terminal.
        // SAFETY: init's copy of the container's terminal, inherited: no
        // other owner in this process.
        #[allow(unsafe_code)]
        drop(unsafe { crate::sys::take_fd(fd) });
        if let Ok(null) = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        ) {
            for n in 0..3 {
                if nix::unistd::isatty(n).unwrap_or(false) {
                    let _ = nix::unistd::dup2(null, n);
                }
            }
            let _ = nix::unistd::close(null);
        }
    }
    if let Err(e) = lock_down_init(spec) {
        tracing::debug!(error = %e, "init could not drop its privileges");
        let _ = kill(command, Signal::SIGKILL);
        return Err((Failure::setup(e), None));
    }
    Ok(reap_and_forward(command, sync))
}

/// Waits for berth's go-ahead; EOF means berth died.
fn wait_go(sync: &mut std::fs::File) -> Result<(), Failure> {
    let mut byte = [0u8; 1];
    match sync.read(&mut byte) {
        Ok(1) if byte[0] == b'G' => Ok(()),
        _ => Err(Failure(137, "berth exited during start-up".into())),
    }
}

/// Init keeps nothing it does not need: the command's uid and no
/// capabilities (no_new_privs and seccomp are already in place).
fn lock_down_init(spec: &ContainerSpec) -> Result<(), String> {
    let id = &spec.identity;
    Confinement {
        // Remapped, init keeps the user's groups (setgroups is denied there).
        groups: (id.privileged && !id.remap_root).then_some(&[][..]),
        ids: Some((id.container_uid(), id.container_gid())),
        capabilities: &caps::CapsHashSet::new(),
        filter: Filter::Inherited,
    }
    .apply()
    .map_err(|e| format!("init: {e}"))
}

/// pid 1's loop: reap every child, pass signals to the command, and exit with
/// the command's status once it is gone (the kernel then kills the rest).
fn reap_and_forward(command: Pid, sync: std::fs::File) -> i32 {
    let Ok(sfd) = SignalFd::with_flags(
        &forwarded_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    ) else {
        return EXIT_BERTH_ERROR;
    };
    loop {
        loop {
            match crate::sys::reap_any_child() {
                Ok(Some((pid, Some(end)))) if pid == command => {
                    return end.exit_code().unwrap_or(EXIT_BERTH_ERROR);
                }
                Ok(None) | Err(_) => break,
                Ok(Some(_)) => continue, // an orphan reaped
            }
        }
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sync.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return EXIT_BERTH_ERROR,
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            // berth is gone: take everything down with us.
            return 137;
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            if let Some(sig) = should_forward(info.ssi_signo) {
                let _ = kill(command, sig);
            }
        }
    }
}
