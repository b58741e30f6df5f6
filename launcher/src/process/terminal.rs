//! The container's own terminal. When berth's stdin is a terminal, the
//! command gets a new pseudo-terminal as its controlling terminal (and as
//! its stdin, and its stdout and stderr where berth's are that terminal),
//! and berth relays the caller's terminal to it in raw mode, as runc and
//! podman do with `-t`. The caller's terminal never reaches the container:
//! nothing inside can push input into the caller's shell (TIOCSTI) or read
//! its keystrokes once the container has exited.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::Pid;

use super::signals::{forwarded_set, should_forward};
use super::{try_reap, RunError};
use crate::sys;

/// A pseudo-terminal for the container.
pub struct Terminal {
    /// berth's end.
    pub master: OwnedFd,
    /// The container's end (berth closes its copy once the container runs).
    pub slave: OwnedFd,
    /// Where the container's end is on the host (`/dev/pts/N`), shown as
    /// the container's `/dev/console`.
    pub slave_path: PathBuf,
}

impl Terminal {
    /// A pseudo-terminal with the size and modes of berth's stdin, when
    /// stdin is a terminal; None otherwise.
    pub fn for_stdin() -> std::io::Result<Option<Terminal>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let modes = termios::tcgetattr(stdin.as_fd()).ok();
        let size = sys::window_size(stdin.as_fd())
            .ok()
            .map(|s| nix::pty::Winsize {
                ws_row: s.ws_row,
                ws_col: s.ws_col,
                ws_xpixel: s.ws_xpixel,
                ws_ypixel: s.ws_ypixel,
            });
        let pty = nix::pty::openpty(size.as_ref(), modes.as_ref()).map_err(std::io::Error::from)?;
        let slave_path = nix::unistd::ttyname(&pty.slave).map_err(std::io::Error::from)?;
        Ok(Some(Terminal {
            master: pty.master,
            slave: pty.slave,
            slave_path,
        }))
    }
}

/// In the command, before exec: a session of its own with the terminal on
/// `fd` as its controlling terminal, and as each of stdin, stdout and
/// stderr that is (berth's) terminal now.
pub(crate) fn take_terminal(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let replace: Vec<i32> = [0, 1, 2]
        .into_iter()
        .filter(|n| nix::unistd::isatty(*n).unwrap_or(false))
        .collect();
    nix::unistd::setsid()?;
    sys::make_controlling_terminal(fd)?;
    for n in replace {
        nix::unistd::dup2(fd.as_raw_fd(), n)?;
    }
    Ok(())
}

/// The terminal on stdin in raw mode until dropped.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, saved);
        }
    }
}

/// berth's side with a terminal: relays stdin to the container's terminal
/// and its output to stdout, passes window size changes on and signals to
/// `child`, until `child` exits. When stdin's terminal hangs up (a closed
/// window, a dropped ssh connection), so does the container's: its
/// session is sent SIGHUP by the kernel, as it would be outside.
pub(crate) fn relay_until_exit(child: Pid, master: OwnedFd) -> Result<i32, RunError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| RunError::Host(format!("{what}: {e}"));
    let mut set = forwarded_set();
    set.add(Signal::SIGWINCH);
    let mut winch = SigSet::empty();
    winch.add(Signal::SIGWINCH);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&winch), None)
        .map_err(|e| failed("cannot block SIGWINCH", &e))?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| failed("cannot create a signalfd", &e))?;
    let _raw = RawMode::enter();
    // Non-blocking towards the container: one that never reads its
    // terminal must not stop berth (typed input waits in `pending`, and
    // stdin is read no further while much is waiting).
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut master = Some(master);
    const MOST_PENDING: usize = 64 * 1024;
    let mut pending: Vec<u8> = Vec::new();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = vec![0u8; 16 * 1024];
    let result = loop {
        if let Some(code) =
            try_reap(child).map_err(|e| failed("cannot wait for the container", &e))?
        {
            if let Some(master) = &master {
                drain(master, &mut buf);
            }
            break Ok(code);
        }
        if !stdin_open {
            master = None; // the hang-up, passed on
        }
        let Some(master) = &master else {
            // Only the child's end is awaited now.
            let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break Err(failed("cannot wait for the container", &e)),
            }
            while let Ok(Some(info)) = sfd.read_signal() {
                if let Some(sig) = should_forward(info.ssi_signo) {
                    let _ = kill(child, sig);
                }
            }
            continue;
        };
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let master_at = master_open.then(|| {
            let mut events = PollFlags::POLLIN;
            if !pending.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(master.as_fd(), events));
            fds.len() - 1
        });
        let stdin_at = (stdin_open && pending.len() < MOST_PENDING).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => break Err(failed("cannot wait for the terminal", &e)),
        }
        let ready = |at: Option<usize>| {
            at.and_then(|i| fds[i].revents())
                .unwrap_or(PollFlags::empty())
        };
        let (signals, master_ready, from_stdin) =
            (ready(Some(0)), ready(master_at), ready(stdin_at));
        drop(fds);
        if !signals.is_empty() {
            while let Ok(Some(info)) = sfd.read_signal() {
                if info.ssi_signo == Signal::SIGWINCH as u32 {
                    if let Ok(size) = sys::window_size(stdin.as_fd()) {
                        let _ = sys::set_window_size(master.as_fd(), &size);
                    }
                } else if let Some(sig) = should_forward(info.ssi_signo) {
                    let _ = kill(child, sig);
                }
            }
        }
        if master_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                }
                Err(nix::errno::Errno::EAGAIN) => {}
                _ => master_open = false, // EIO: the container's end is closed
            }
        }
        if master_open && master_ready.contains(PollFlags::POLLOUT) {
            match nix::unistd::write(master, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => pending.clear(),
            }
        }
        if !from_stdin.is_empty() {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                _ => stdin_open = false,
            }
        }
    };
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&winch), None);
    result
}

/// What the container wrote before it ended, up to the first empty read.
fn drain(master: &OwnedFd, buf: &mut [u8]) {
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut out = std::io::stdout().lock();
    while let Ok(n) = nix::unistd::read(master.as_raw_fd(), buf) {
        if n == 0 || out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = out.flush();
}
