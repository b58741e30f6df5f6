//! Signal forwarding: berth to init, init to the command.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::{try_reap, RunError};

/// Signals passed on to the command.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The forwarded signals plus SIGCHLD.
pub fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// A signal mask to put back.
pub struct SavedMask(SigSet);

impl SavedMask {
    /// Restores the mask.
    pub fn restore(self) -> nix::Result<()> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None)
    }
}

/// Blocks the forwarded signals and SIGCHLD (they are read from a signalfd).
pub fn block_forwarded() -> nix::Result<SavedMask> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&forwarded_set()),
        Some(&mut old),
    )?;
    Ok(SavedMask(old))
}

/// Whether a received signal should be passed on. A terminal's ^C counts
/// too: the container runs in a session of its own, away from the
/// terminal's foreground group, so only berth receives it.
pub fn should_forward(signo: u32) -> Option<Signal> {
    let sig = Signal::try_from(signo as i32).ok()?;
    FORWARDED.contains(&sig).then_some(sig)
}

/// berth's side: waits for init to exit, forwarding signals to it.
pub fn wait_forwarding(child: Pid) -> Result<i32, RunError> {
    let sfd = SignalFd::with_flags(&forwarded_set(), SfdFlags::SFD_CLOEXEC)
        .map_err(|e| RunError::Host(format!("cannot create a signalfd: {e}")))?;
    loop {
        if let Some(code) = try_reap(child)
            .map_err(|e| RunError::Host(format!("cannot wait for the container: {e}")))?
        {
            return Ok(code);
        }
        match sfd.read_signal() {
            Ok(Some(info)) => {
                if let Some(sig) = should_forward(info.ssi_signo) {
                    let _ = kill(child, sig);
                }
            }
            Ok(None) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(RunError::Host(format!("cannot read signals: {e}"))),
        }
    }
}
