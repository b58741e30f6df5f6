//! Writing into the layer being built, always through directory
//! descriptors: opening a directory beneath the layer's root without
//! following symlinks, replacing what an earlier entry left, times, and
//! file content with holes for runs of zeros.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{mkdirat, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::UnpackError;
use crate::sys;

pub(super) enum CopyError {
    /// More than the budget.
    TooLarge,
    /// Reading or writing failed.
    Io(io::Error),
}

/// Copies a file's content from `from` to `to`, leaving holes for blocks
/// of zeros (a sparse entry, or a layer of zeros that compresses to
/// nothing, takes no disk), and at most `budget` bytes. Returns the size.
pub(super) fn copy_sparse(
    from: &mut impl Read,
    to: &mut File,
    budget: u64,
) -> Result<u64, CopyError> {
    use std::io::{Seek, SeekFrom, Write};
    const HOLE: usize = 4096;
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    let mut pending_hole: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Io(e)),
        };
        size += n as u64;
        if size > budget {
            return Err(CopyError::TooLarge);
        }
        for chunk in buf[..n].chunks(HOLE) {
            if chunk.len() == HOLE && chunk.iter().all(|b| *b == 0) {
                pending_hole += HOLE as u64;
                continue;
            }
            if pending_hole > 0 {
                to.seek(SeekFrom::Current(pending_hole as i64))
                    .map_err(CopyError::Io)?;
                pending_hole = 0;
            }
            to.write_all(chunk).map_err(CopyError::Io)?;
        }
    }
    if pending_hole > 0 {
        to.set_len(size).map_err(CopyError::Io)?;
    }
    Ok(size)
}

/// Opens the directory `components` below `root` without following any
/// symlink, creating missing directories when `create` is set.
pub(super) fn open_beneath(
    root: &OwnedFd,
    components: &[OsString],
    create: bool,
    shown: &str,
) -> Result<OwnedFd, UnpackError> {
    // One openat2 for the whole path (the kernel walks it, refusing any
    // symlink and any way out); the walk below, one component at a time,
    // only when a directory is missing or to name the symlink in the way.
    let joined = PathBuf::from_iter(components);
    let whole = sys::openat2(
        Some(root.as_fd()),
        if components.is_empty() {
            Path::new(".")
        } else {
            &joined
        },
        libc::O_DIRECTORY | libc::O_RDONLY,
        sys::RESOLVE_BENEATH
            | sys::RESOLVE_NO_SYMLINKS
            | sys::RESOLVE_NO_MAGICLINKS
            | sys::RESOLVE_NO_XDEV,
    );
    if let Ok(fd) = whole {
        return Ok(fd);
    }
    let mut current = root.try_clone().map_err(|e| UnpackError::Write {
        path: shown.into(),
        source: e,
    })?;
    for (i, part) in components.iter().enumerate() {
        let open = |fd: &OwnedFd| {
            sys::openat_owned(
                Some(fd.as_raw_fd()),
                part.as_os_str(),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let next = match open(&current) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(
                    Some(current.as_raw_fd()),
                    part.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(write_err(shown, e)),
                }
                open(&current).map_err(|e| write_err(shown, e))?
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(UnpackError::ThroughSymlink {
                    path: shown.to_string(),
                    symlink: PathBuf::from_iter(&components[..=i]).display().to_string(),
                })
            }
            Err(e) => return Err(write_err(shown, e)),
        };
        current = next;
    }
    Ok(current)
}

/// Removes what an earlier entry of this layer left at `name`, so a later
/// entry wins as tar semantics ask. A directory is only removed for a whiteout.
pub(super) fn remove_existing(
    parent: &OwnedFd,
    name: &OsStr,
    shown: &str,
    is_whiteout: bool,
) -> Result<(), UnpackError> {
    match unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) if is_whiteout => {
            // A directory this layer made and then whites out: remove it
            // (std's remove_dir_all never follows symlinks).
            let path = crate::as_user::fd_path(parent.as_fd()).join(name);
            std::fs::remove_dir_all(&path).map_err(|e| UnpackError::Write {
                path: shown.to_string(),
                source: e,
            })
        }
        Err(Errno::EISDIR) => Err(UnpackError::ReplacesDirectory {
            path: shown.to_string(),
        }),
        Err(e) => Err(write_err(shown, e)),
    }
}

pub(super) fn set_mtime(
    parent: &OwnedFd,
    name: &OsStr,
    mtime: i64,
    shown: &str,
) -> Result<(), UnpackError> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(
        Some(parent.as_raw_fd()),
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| write_err(shown, e))
}

pub(super) fn write_err(path: &str, errno: Errno) -> UnpackError {
    UnpackError::Write {
        path: path.to_string(),
        source: io::Error::from(errno),
    }
}
