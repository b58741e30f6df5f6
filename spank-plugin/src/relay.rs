//! A Slurm task inside the container's pid namespace.
//!
//! `setns(CLONE_NEWPID)` (done as root in task_init_privileged, with the
//! container's other namespaces) moves only the task's future children. So
//! in task_init, as the job's user and after Slurm has put the task in its
//! process group, cgroup and CPU set, the task forks: the child inherits all
//! of that and goes on to exec the user's program inside the namespace; the
//! task Slurm knows stays outside as its **relay**: it passes on the
//! signals slurmstepd sends to it alone and ends as the child ended (same
//! exit code, or killed by the same signal).
//!
//! The child stays in the task's process group and session, so what Slurm
//! sends to the group (proctrack/pgid, suspend, `scancel --full` of a batch
//! step) and a terminal's signals under `srun --pty` reach it directly, as
//! they reach a task without a container. The container cannot name the
//! relay (its pid is outside the namespace); a signal a container process
//! sends to the whole group (`kill 0`) reaches the relay too, which passes
//! on slurmstepd's only. The child dies with the relay (parent-death
//! signal), and with the container's init.

use std::os::fd::AsFd;

use berth::sys::ChildEnd;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{siginfo, SfdFlags, SignalFd};
use nix::unistd::{ForkResult, Pid};

/// Which signals sent to the task the relay passes on to its child.
#[derive(Clone, Copy, Debug)]
pub struct Forwarding {
    /// slurmstepd signals the task and its descendants alike
    /// (proctrack/pgid: the task's process group, which the child is in;
    /// proctrack/cgroup with SignalChildrenProcesses=yes): its signals
    /// reach the child directly, and passing them on would deliver them
    /// twice. Otherwise they reach the relay alone (proctrack/cgroup), or
    /// the child alone (proctrack/linuxproc skips processes named like
    /// slurmstepd, as the relay is).
    pub stepd_reaches_child: bool,
}

impl Forwarding {
    /// Whether a signal the relay received goes on to the child.
    fn passes_on(&self, info: &siginfo, stepd: Pid) -> bool {
        self.passes_on_signal(info.ssi_signo as i32, info.ssi_code, info.ssi_pid, stepd)
    }

    /// `passes_on` of a signal's number (real-time ones too), `si_code` and sender.
    fn passes_on_signal(&self, signo: i32, code: i32, sender: u32, stepd: Pid) -> bool {
        if signo == libc::SIGCHLD {
            return false;
        }
        // A terminal's hang-up goes to the session leader alone, which the
        // relay is under `srun --pty` (its other signals go to the
        // foreground process group, the child's).
        let sent_by_a_process = code <= 0;
        if !sent_by_a_process {
            return signo == libc::SIGHUP;
        }
        // Anyone but slurmstepd reaches the relay by signalling the task's
        // whole process group (a container's `kill 0`): the child has it.
        if sender as i32 != stepd.as_raw() {
            return false;
        }
        // slurmstepd sends SIGWINCH (srun --pty) to the task's pid alone.
        signo == libc::SIGWINCH || !self.stepd_reaches_child
    }
}

/// Forks the task into the pid namespace its `setns` chose. Returns in the
/// child; the parent becomes the relay and never returns.
pub fn enter_pid_namespace(forwarding: Forwarding) -> Result<(), String> {
    // Nothing is delivered between the fork and the relay's signalfd (or
    // the child's own handlers): both start with every signal blocked.
    let mut saved = SigSet::empty();
    sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut saved),
    )
    .map_err(|e| format!("cannot block signals: {e}"))?;
    let relay_fd = berth::sys::pidfd_open(nix::unistd::getpid())
        .map_err(|e| format!("cannot open the task's pidfd: {e}"))?;
    // SAFETY: a Slurm task process is single-threaded (slurmstepd forked it).
    #[allow(unsafe_code)]
    let forked = unsafe { berth::sys::fork() };
    match forked {
        Err(e) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&saved), None);
            Err(format!("cannot fork the task into the container: {e}"))
        }
        Ok(ForkResult::Parent { child }) => relay(child, forwarding),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            // The relay may have been killed before that took effect.
            let mut fds = [PollFd::new(relay_fd.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
                berth::sys::exit_child(137);
            }
            drop(relay_fd);
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&saved), None)
                .map_err(|e| format!("cannot restore the signal mask: {e}"))
        }
    }
}

/// The task Slurm knows: holds nothing but its stderr (for its one
/// message), passes signals on, ends as the child.
fn relay(child: Pid, forwarding: Forwarding) -> ! {
    let _ = nix::unistd::close(0);
    let _ = nix::unistd::close(1);
    let _ = berth::sys::close_from(3);
    let stepd = nix::unistd::getppid();
    let signals = SignalFd::with_flags(&SigSet::all(), SfdFlags::SFD_CLOEXEC);
    loop {
        // Without a signalfd (out of descriptors?), at least end as the child does.
        match berth::sys::reap_child(child, signals.is_err()) {
            Ok(Some(ChildEnd::Exited(code))) => berth::sys::exit_child(code),
            Ok(Some(ChildEnd::Signaled(signo))) => die_by(signo),
            // Slurm's parallel-debugger launch (srun --debugger-test, MPIR)
            // has the task it forked trace itself: that is the child, whose
            // tracer is then the relay, while Slurm waits for the relay to
            // stop, for ever.
            Ok(Some(ChildEnd::TraceStopped)) => {
                let _ = berth::sys::send_signal(child, libc::SIGKILL);
                eprintln!(
                    "berth: a parallel debugger cannot attach to a task in a container (srun --debugger-test): run it without --container-image"
                );
                berth::sys::exit_child(1)
            }
            Ok(None) => {}
            Err(_) => berth::sys::exit_child(1),
        }
        let Ok(signals) = &signals else { continue };
        if let Ok(Some(info)) = signals.read_signal() {
            if forwarding.passes_on(&info, stepd) {
                let _ = berth::sys::send_signal(child, info.ssi_signo as i32);
            }
        }
    }
}

/// Ends the relay by signal `signo`, as its child ended, without a core dump.
fn die_by(signo: i32) -> ! {
    let _ = nix::sys::prctl::set_dumpable(false);
    berth::sys::reset_signal_dispositions();
    // Every signal is blocked; only this one is let through, so no signal
    // still unread in the signalfd can end the relay first.
    let _ = berth::sys::send_signal(nix::unistd::getpid(), signo);
    let _ = berth::sys::unblock_only(signo);
    berth::sys::exit_child(128 + signo)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPD: Pid = Pid::from_raw(100);
    const CGROUP: Forwarding = Forwarding {
        stepd_reaches_child: false,
    };
    const TO_ALL: Forwarding = Forwarding {
        stepd_reaches_child: true,
    };

    fn passes(fw: Forwarding, signo: i32, code: i32, sender: u32) -> bool {
        fw.passes_on_signal(signo, code, sender, STEPD)
    }

    #[test]
    fn slurmstepd_signals_pass_on_only_where_they_do_not_reach_the_child() {
        assert!(passes(CGROUP, libc::SIGTERM, 0, 100));
        assert!(passes(CGROUP, libc::SIGRTMIN() + 2, 0, 100));
        assert!(!passes(TO_ALL, libc::SIGTERM, 0, 100));
        // SIGWINCH goes to the task's pid alone, whatever tracks the step.
        assert!(passes(TO_ALL, libc::SIGWINCH, 0, 100));
    }

    #[test]
    fn other_senders_signal_the_group_the_child_is_in() {
        // A container's `kill 0`, anyone's kill of the group.
        assert!(!passes(CGROUP, libc::SIGUSR1, 0, 4242));
        assert!(!passes(CGROUP, libc::SIGTERM, -6, 4242));
    }

    #[test]
    fn kernel_signals_but_a_hang_up_and_sigchld_stay_with_the_relay() {
        assert!(!passes(CGROUP, libc::SIGINT, libc::SI_KERNEL, 0));
        assert!(!passes(CGROUP, libc::SIGCONT, libc::SI_KERNEL, 0));
        // ...but a terminal's hang-up reaches only the session leader.
        assert!(passes(CGROUP, libc::SIGHUP, libc::SI_KERNEL, 0));
        assert!(!passes(CGROUP, libc::SIGCHLD, 1, 100));
        assert!(!passes(CGROUP, libc::SIGCHLD, 0, 100));
    }
}
