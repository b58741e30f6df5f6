//! Doing one thing with another user's rights: root acting for a user (a
//! mount source, a credentials file, an output path) checks or touches the
//! file as that user, in a forked child, so the kernel's permission checks
//! (and a symlink the user planted) apply to the user, not to root.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};

/// Runs `f` in a child process that has taken `uid`, `gid` and `groups`;
/// true when the ids could be taken and `f` returned true. The caller must
/// be single-threaded; `f` should only make system calls.
pub fn as_user(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> bool) -> bool {
    // SAFETY: its callers are single-threaded (berth's commands and
    // slurmstepd's task process), and the child only takes the ids, runs
    // `f`'s system calls and exits.
    #[allow(unsafe_code)]
    let forked = unsafe { crate::sys::fork() };
    match forked {
        Ok(ForkResult::Child) => {
            let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
            let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
            let ok = nix::unistd::setgroups(&groups).is_ok()
                && nix::unistd::setresgid(g, g, g).is_ok()
                && nix::unistd::setresuid(u, u, u).is_ok()
                && f();
            crate::sys::exit_child(if ok { 0 } else { 1 })
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

/// Reads `path` (at most 60 KiB, what a pipe holds while the parent waits:
/// credential files are small) with the user's rights.
pub fn read_as_user(path: &std::path::Path, uid: u32, gid: u32) -> Option<String> {
    use std::io::Read;
    let (r, w) = nix::unistd::pipe().ok()?;
    let read = as_user(uid, gid, &[], || {
        let mut data = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(60 * 1024).read_to_end(&mut data))
            .is_ok()
            && nix::unistd::write(&w, &data).is_ok()
    });
    drop(w);
    let mut text = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut text);
    (read && !text.is_empty()).then_some(text)
}

/// A user root acts for: whose rights every path that user named is
/// opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRights {
    /// Host uid.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Supplementary host groups.
    pub groups: Vec<u32>,
}

impl UserRights {
    /// Runs `f` on this thread with the user's filesystem identity (fsuid,
    /// fsgid, groups: the ids the kernel checks file access with), then
    /// takes root's back. Only this thread changes: other threads keep theirs.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> std::io::Result<T> {
        let saved_groups: Vec<u32> = nix::unistd::getgroups()
            .map_err(std::io::Error::from)?
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let (uid, gid) = crate::sys::set_thread_fs_identity(self.uid, self.gid, &self.groups)?;
        /// Takes root's identity back even when `f` panics.
        struct Restore(u32, u32, Vec<u32>);
        impl Drop for Restore {
            fn drop(&mut self) {
                if crate::sys::set_thread_fs_identity(self.0, self.1, &self.2).is_err() {
                    // Going on with another user's identity would be worse.
                    std::process::abort();
                }
            }
        }
        let _restore = Restore(uid, gid, saved_groups);
        Ok(f())
    }
}

/// Runs `f` with the filesystem rights of `user`, or as the caller itself
/// when there is none (berth run by a user, or root for itself).
pub fn with_rights<T>(user: Option<&UserRights>, f: impl FnOnce() -> T) -> std::io::Result<T> {
    match user {
        Some(user) => user.with(f),
        None => Ok(f()),
    }
}

/// The path that reaches exactly the object `fd` is open on, from this
/// process and its children (`/proc/self/fd/N`), for APIs that take paths.
pub fn fd_path(fd: std::os::fd::BorrowedFd<'_>) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Where the object `fd` is open on is now (what the kernel says of it).
pub fn opened_at(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<std::path::PathBuf> {
    std::fs::read_link(fd_path(fd))
}

/// Why a path a user named was not opened.
#[derive(Debug, thiserror::Error)]
pub enum UserPathError {
    /// The user may not reach it, or it does not exist (one answer for both,
    /// so root's errors tell nothing the user could not find out alone).
    #[error("{path}: not found, or permission denied for uid {uid}")]
    NotAccessible {
        /// As the user named it.
        path: std::path::PathBuf,
        /// Whose rights it was opened with.
        uid: u32,
    },
    /// Under `/proc` (another process's files or root).
    #[error("{0}: paths under /proc are not accepted")]
    Proc(std::path::PathBuf),
    /// Another failure.
    #[error("{path}: {source}")]
    Io {
        /// As the user named it.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens `path` (relative to the working directory) with the rights of
/// `user` (None: the caller's own, for berth run by a user or by root for
/// itself). Symlinks are resolved with the user's rights first; the
/// resolved path is then opened following no symlink and no magic link, and
/// nothing on procfs is accepted. Callers go on with the descriptor only.
/// `flags` are `O_*` flags (`O_CLOEXEC` is added, and `O_NOCTTY` without `O_PATH`).
pub fn open_user_path(
    user: Option<&UserRights>,
    path: &std::path::Path,
    flags: libc::c_int,
) -> Result<std::os::fd::OwnedFd, UserPathError> {
    use crate::sys;
    let uid = user.map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid);
    let fail = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT | libc::EACCES | libc::EPERM | libc::ENOTDIR | libc::ELOOP) => {
            UserPathError::NotAccessible {
                path: path.to_path_buf(),
                uid,
            }
        }
        _ => UserPathError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    };
    let open = || -> Result<std::os::fd::OwnedFd, UserPathError> {
        let resolved = std::fs::canonicalize(path).map_err(fail)?;
        if resolved.starts_with("/proc") {
            return Err(UserPathError::Proc(path.to_path_buf()));
        }
        // openat2 refuses any flag beside O_PATH's few: O_NOCTTY only without it.
        let flags = match flags & libc::O_PATH {
            0 => flags | libc::O_NOCTTY,
            _ => flags,
        };
        let fd = sys::openat2(
            None,
            &resolved,
            flags,
            sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
        )
        .map_err(fail)?;
        let on_proc = nix::sys::statfs::fstatfs(&fd)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        if on_proc {
            return Err(UserPathError::Proc(path.to_path_buf()));
        }
        Ok(fd)
    };
    with_rights(user, open).map_err(fail)?
}

/// What an opened image path is, read from its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// Anything else (FIFO, device, socket): never read as an image.
    Other(&'static str),
}

/// The kind of object `fd` is open on.
pub fn file_kind(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<FileKind> {
    use nix::sys::stat::SFlag;
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .map_err(std::io::Error::from)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    Ok(match kind {
        SFlag::S_IFDIR => FileKind::Dir,
        SFlag::S_IFREG => FileKind::File,
        SFlag::S_IFIFO => FileKind::Other("a FIFO"),
        SFlag::S_IFCHR => FileKind::Other("a character device"),
        SFlag::S_IFBLK => FileKind::Other("a block device"),
        SFlag::S_IFSOCK => FileKind::Other("a socket"),
        _ => FileKind::Other("not a file or directory"),
    })
}
