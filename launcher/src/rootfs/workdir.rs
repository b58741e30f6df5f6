//! The container's working directory, made when missing. Root makes the
//! missing directories that lie in the container's own filesystem (the
//! image's directories are root's); on anything mounted in from the host
//! the user makes them, with the user's own rights, so root never writes a
//! host path the user could not. The walk holds each directory open and
//! makes the next one inside that descriptor, so a symlink swapped in by a
//! process of the container meanwhile cannot redirect it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, mkdirat, Mode};

use crate::sys;

fn open_dir(dir: Option<&OwnedFd>, name: &std::ffi::OsStr, follow: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    sys::openat_owned(dir.map(|d| d.as_raw_fd()), name, flags, Mode::empty())
}

/// Makes `path` (absolute, in the current root) and its missing parents:
/// as root in the root's own filesystem, as `uid`/`gid`/`groups` on any
/// other (a bind mount from the host, a tmpfs).
pub fn make_working_dir(path: &Path, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    let mut dir = open_dir(None, "/".as_ref(), true)?;
    let own_device = fstat(dir.as_raw_fd())?.st_dev;
    for component in path.components() {
        let name = match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => name,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "must be an absolute path without ..",
                ))
            }
        };
        // The image's own symlinks (say /opt -> /usr/local) are followed.
        dir = match open_dir(Some(&dir), name, true) {
            Ok(next) => next,
            Err(Errno::ENOENT) => {
                let make = || match mkdirat(
                    Some(dir.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(e) => Err(e),
                };
                if fstat(dir.as_raw_fd())?.st_dev == own_device {
                    make()?;
                } else if !crate::as_user::as_user(uid, gid, groups, || make().is_ok()) {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "it is on a path mounted from the host, where the user may not create it",
                    ));
                }
                open_dir(Some(&dir), name, false)?
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(())
}
