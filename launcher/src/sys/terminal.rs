//! Terminals: window size and the controlling terminal.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The window size of the terminal on `fd` (`TIOCGWINSZ`).
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: fd is live and `size` a winsize the kernel fills in.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Sets the window size of the terminal on `fd` (`TIOCSWINSZ`).
pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: fd is live and `size` a winsize the kernel only reads.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the terminal on `fd` the controlling terminal of the calling
/// session leader (`TIOCSCTTY`).
pub fn make_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_controlling_terminal(fd, 0)
}

/// Makes the terminal on `fd` the controlling terminal of the calling
/// session leader (root), taking it from the session that has it (a
/// login session's terminal, from sshd's side of it: `TIOCSCTTY` 1).
pub fn take_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_controlling_terminal(fd, 1)
}

fn set_controlling_terminal(fd: BorrowedFd<'_>, steal: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is live; the argument says whether to steal it.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, steal) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
