//! Paths made for the user inside the container: the working directory and
//! the mount points of the user's bind mounts, when missing. Root makes
//! what lies in the container's own filesystem (the image's directories are
//! root's); on anything mounted in from the host the user makes it, with
//! the user's own rights, so root never writes a host path the user could
//! not. The walk holds each directory open and makes the next component
//! inside that descriptor, so a symlink swapped in by a process of the
//! container meanwhile cannot redirect it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, mkdirat, Mode};

use crate::sys;

/// Whose rights make a path outside the container's own filesystem.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    /// Host uid.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Supplementary host groups.
    pub groups: &'a [u32],
}

/// What to make at the end of the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// An empty file (a mount point for a file).
    File,
}

/// Opens the directory `name` in `dir`. The image's own symlinks are
/// followed when `follow` is set, magic links (`/proc/PID/root`, which
/// lead into another process's root: another user's container) never.
fn open_dir(dir: Option<&OwnedFd>, name: &std::ffi::OsStr, follow: bool) -> nix::Result<OwnedFd> {
    let mut resolve = sys::RESOLVE_NO_MAGICLINKS;
    if !follow {
        resolve |= sys::RESOLVE_NO_SYMLINKS;
    }
    sys::openat2(
        dir.map(|d| d.as_fd()),
        Path::new(name),
        libc::O_PATH | libc::O_DIRECTORY,
        resolve,
    )
    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Makes `path` (absolute, in the current root) and its missing parents:
/// as root in the root's own filesystem, as `user` on any other (a bind
/// mount from the host, a tmpfs). Something already at `path` is left as it is.
pub fn make(path: &Path, kind: Kind, user: User) -> io::Result<()> {
    let mut dir = open_dir(None, "/".as_ref(), true)?;
    let own_device = fstat(dir.as_raw_fd())?.st_dev;
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => names.push(name),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "must be an absolute path without ..",
                ))
            }
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return Ok(()); // "/"
    };
    for name in parents
        .iter()
        .copied()
        .chain((kind == Kind::Dir).then_some(*last))
    {
        // The image's own symlinks (say /opt -> /usr/local) are followed.
        dir = match open_dir(Some(&dir), name, true) {
            Ok(next) => next,
            Err(Errno::ENOENT) => {
                let make_dir = || match mkdirat(
                    Some(dir.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(e) => Err(e),
                };
                as_whoever_may(&dir, own_device, user, make_dir)?;
                open_dir(Some(&dir), name, false)?
            }
            Err(e) => return Err(e.into()),
        };
    }
    if kind == Kind::File {
        let make_file = || {
            let flags = OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_WRONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            match sys::openat_owned(
                Some(dir.as_raw_fd()),
                last,
                flags,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        };
        as_whoever_may(&dir, own_device, user, make_file)?;
    }
    Ok(())
}

/// Runs `make` in `dir`: as root when `dir` is on the container's own
/// filesystem, else in a child with the user's ids.
fn as_whoever_may(
    dir: &OwnedFd,
    own_device: u64,
    user: User,
    make: impl Fn() -> nix::Result<()>,
) -> io::Result<()> {
    if fstat(dir.as_raw_fd())?.st_dev == own_device {
        return Ok(make()?);
    }
    if crate::as_user::as_user(user.uid, user.gid, user.groups, || make().is_ok()) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        "it is on a path mounted from the host, where the user may not create it",
    ))
}
