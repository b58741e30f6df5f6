//! A container's own network namespace: only its loopback, brought up.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct ifreq` with the `ifr_flags` member of its union (40 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    pad: [u8; 22],
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// Brings up `lo` in the calling process's network namespace.
pub fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor, owned from here on.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut request = IfReqFlags {
        name: [0; 16],
        flags: 0,
        pad: [0; 22],
    };
    request.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq it is given, which
    // lives for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    request.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq it is given, which lives for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
