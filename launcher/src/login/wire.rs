//! What `berth login` (the user's side, sshd's ForceCommand) and `berth
//! login-service` (root) say over the service's socket: a
//! `SOCK_SEQPACKET` unix socket, one JSON message per packet. The
//! session's first message carries its standard input, output and error
//! (`SCM_RIGHTS`); who asks is the socket's peer (`SO_PEERCRED`), never
//! anything the message says.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

/// The largest message either side sends.
const MAX_MESSAGE: usize = 64 * 1024;

/// What the user's side says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FromUser {
    /// Start a session (with the three descriptors).
    Start {
        /// `ssh host COMMAND` (sshd's `SSH_ORIGINAL_COMMAND`), or None for
        /// an interactive shell.
        command: Option<String>,
        /// The session's variables sshd set that the container keeps
        /// (TERM, the locale, SSH_CONNECTION...): see [`PASSED_ON`].
        env: Vec<(String, String)>,
    },
    /// The user's side was sent this signal (sshd's SIGHUP, SIGTERM).
    Signal(i32),
}

/// What the service answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FromService {
    /// The session could not start: why, and what to do.
    Refused(String),
    /// The session ended with this exit status (128+N: killed by signal N).
    Exit(i32),
}

/// The variables of the user's side a session keeps: the terminal, the
/// locale, and what sshd says of the connection.
pub const PASSED_ON: &[&str] = &[
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_COLLATE",
    "LC_MONETARY",
    "COLORTERM",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "SSH_ORIGINAL_COMMAND",
];

/// Why a message could not be passed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("{what}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// The other side closed it.
    #[error("the other side closed the connection")]
    Closed,
    /// A message that is not one.
    #[error("a message that cannot be read: {0}")]
    Garbled(String),
}

fn socket_error(what: &'static str) -> impl FnOnce(nix::Error) -> WireError {
    move |source| WireError::Socket { what, source }
}

fn new_socket() -> Result<OwnedFd, WireError> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(socket_error("cannot create a socket"))
}

/// Connects to the service at `path`.
pub fn connect(path: &Path) -> Result<OwnedFd, WireError> {
    let fd = new_socket()?;
    let address = UnixAddr::new(path).map_err(socket_error("socket path"))?;
    socket::connect(fd.as_raw_fd(), &address).map_err(socket_error("cannot connect"))?;
    Ok(fd)
}

/// Listens at `path` (a stale socket there is replaced).
pub fn listen(path: &Path) -> Result<OwnedFd, WireError> {
    let fd = new_socket()?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = std::fs::remove_file(path);
    }
    let address = UnixAddr::new(path).map_err(socket_error("socket path"))?;
    socket::bind(fd.as_raw_fd(), &address).map_err(socket_error("cannot bind"))?;
    socket::listen(
        &fd,
        socket::Backlog::new(64).unwrap_or(socket::Backlog::MAXCONN),
    )
    .map_err(socket_error("cannot listen"))?;
    Ok(fd)
}

/// Accepts a connection.
pub fn accept(listener: BorrowedFd) -> Result<OwnedFd, WireError> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)
        .map_err(socket_error("cannot accept"))?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(fd)
}

/// The uid of the process at the other end (the kernel's word).
pub fn peer_uid(conn: BorrowedFd) -> Result<u32, WireError> {
    peer(conn).map(|(uid, _)| uid)
}

/// The uid and pid of the process at the other end when it connected.
pub fn peer(conn: BorrowedFd) -> Result<(u32, i32), WireError> {
    socket::getsockopt(&conn, sockopt::PeerCredentials)
        .map(|c| (c.uid(), c.pid()))
        .map_err(socket_error("cannot read the peer's credentials"))
}

/// Sends `message` with `fds`.
pub fn send<T: Serialize>(conn: BorrowedFd, message: &T, fds: &[RawFd]) -> Result<(), WireError> {
    let bytes = serde_json::to_vec(message).map_err(|e| WireError::Garbled(e.to_string()))?;
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match socket::sendmsg::<()>(
            conn.as_raw_fd(),
            &iov,
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(socket_error("cannot send")(e)),
            Ok(_) => return Ok(()),
        }
    }
}

/// Reads and drops what the other side has sent so far, without waiting:
/// a connection closed with unread messages is reset, and the other side
/// would see that instead of the answer sent before the close.
pub fn discard_pending(conn: BorrowedFd) {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut control = nix::cmsg_space!([RawFd; 3]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let received = socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        );
        match received {
            Ok(message) if message.bytes > 0 => {
                if let Ok(cmsgs) = message.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// `receive`, waiting at most `limit` for the message.
pub fn receive_within<T: for<'de> Deserialize<'de>>(
    conn: BorrowedFd,
    limit: std::time::Duration,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut fds = [nix::poll::PollFd::new(conn, nix::poll::PollFlags::POLLIN)];
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(0) => Err(WireError::Garbled(format!(
            "nothing said within {} s",
            limit.as_secs()
        ))),
        Ok(_) => receive(conn),
        Err(e) => Err(socket_error("cannot wait for a message")(e)),
    }
}

/// Receives one message and the descriptors it carries.
pub fn receive<T: for<'de> Deserialize<'de>>(
    conn: BorrowedFd,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut control = nix::cmsg_space!([RawFd; 3]);
    let (length, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        match socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(socket_error("cannot receive")(e)),
            Ok(message) => {
                let mut fds = vec![];
                for cmsg in message.cmsgs().map_err(socket_error("cannot receive"))? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        for fd in received {
                            // SAFETY: the kernel installed these descriptors
                            // for this process alone.
                            #[allow(unsafe_code)]
                            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                            fds.push(fd);
                        }
                    }
                }
                let truncated = message
                    .flags
                    .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                break (message.bytes, fds, truncated);
            }
        }
    };
    if length == 0 {
        return Err(WireError::Closed);
    }
    if truncated {
        return Err(WireError::Garbled(
            "too long, or too many descriptors".into(),
        ));
    }
    let message =
        serde_json::from_slice(&buffer[..length]).map_err(|e| WireError::Garbled(e.to_string()))?;
    Ok((message, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_start_carries_its_descriptors_and_the_peer_is_the_kernels_word() {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let start = FromUser::Start {
            command: Some("echo hi".into()),
            env: vec![("TERM".into(), "xterm".into())],
        };
        let (r, w) = nix::unistd::pipe().unwrap();
        send(
            a.as_fd(),
            &start,
            &[r.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()],
        )
        .unwrap();
        let (got, fds): (FromUser, _) = receive(b.as_fd()).unwrap();
        assert_eq!((got, fds.len()), (start, 3));
        assert_eq!(peer_uid(b.as_fd()).unwrap(), nix::unistd::getuid().as_raw());
        send(b.as_fd(), &FromService::Exit(3), &[]).unwrap();
        let (got, fds): (FromService, _) = receive(a.as_fd()).unwrap();
        assert_eq!((got, fds.len()), (FromService::Exit(3), 0));
        drop(b);
        assert!(matches!(
            receive::<FromService>(a.as_fd()),
            Err(WireError::Closed)
        ));
    }
}
