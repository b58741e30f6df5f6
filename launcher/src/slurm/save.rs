//! `--container-save`: the container of a Slurm step packed into a
//! squashfs file the job's user owns.
//!
//! Only what the user can read is packed, and only the container's own
//! filesystem: root takes a detached copy of the container's root mount
//! alone (`open_tree` without `AT_RECURSIVE`: /proc, /dev, /sys and every
//! bind mount are simply not in it, whatever their paths), then mksquashfs
//! runs with the user's ids, umask 077, over that copy and writes into the
//! output directory the user's rights opened. Unreadable files are saved
//! empty, and said so.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::as_user::{self, UserPathError, UserRights};

/// Why a save failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The output is not a path to a file.
    #[error("--container-save {0}: not a file path")]
    NotAFilePath(PathBuf),
    /// The output's directory is not the user's to write in.
    #[error("--container-save: {0}")]
    Output(#[from] UserPathError),
    /// The process named is not the keeper recorded (gone, reused, or not berth's).
    #[error("process {0} is not the container's keeper (gone, or its pid reused)")]
    NotTheKeeper(i32),
    /// The keeper's mount namespace could not be entered or left.
    #[error("cannot reach the container of keeper {pid}: {source}")]
    Namespace {
        /// The keeper.
        pid: i32,
        /// What failed.
        source: std::io::Error,
    },
    /// mksquashfs failed.
    #[error("mksquashfs (as uid {uid}) failed: {message}")]
    Mksquashfs {
        /// The user it ran as.
        uid: u32,
        /// Its last message.
        message: String,
    },
    /// The packed file could not be put in place.
    #[error("cannot write {path} as uid {uid}")]
    Publish {
        /// The output.
        path: PathBuf,
        /// The user.
        uid: u32,
    },
    /// Another system call failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The keeper whose container is saved: its pid and start time (as its
/// `KeeperRecord` has them).
#[derive(Debug, Clone, Copy)]
pub struct Keeper {
    /// Its pid.
    pub pid: i32,
    /// Its start time (`/proc/PID/stat`).
    pub started: u64,
}

/// What a save did.
#[derive(Debug, Default)]
pub struct Saved {
    /// Files the user may not read, saved empty.
    pub unreadable: usize,
}

/// Packs the container of `keeper` into `output`, with `user`'s rights.
pub fn save_container(
    keeper: Keeper,
    output: &Path,
    user: &UserRights,
) -> Result<Saved, SaveError> {
    let (uid, gid) = (user.uid, user.gid);
    let (Some(parent), Some(name)) = (output.parent(), output.file_name()) else {
        return Err(SaveError::NotAFilePath(output.to_path_buf()));
    };
    let dir = as_user::open_user_path(Some(user), parent, libc::O_PATH | libc::O_DIRECTORY)?;
    let tree = container_root_tree(keeper)?;
    let tmp_name = format!(
        ".{}.berth-save.{}",
        name.to_string_lossy(),
        std::process::id()
    );
    let fd_path = |fd: &OwnedFd| as_user::fd_path(fd.as_fd());
    let source = format!("{}/", fd_path(&tree).display());
    let target = fd_path(&dir).join(&tmp_name);
    let log = nix::sys::memfd::memfd_create(
        c"berth-save-log",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let log_for_child = log.try_clone()?;
    let packed = as_user::as_user(uid, gid, &user.groups, || {
        let inherit = |fd: &OwnedFd| {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .is_ok()
        };
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        inherit(&tree)
            && inherit(&dir)
            && std::process::Command::new("mksquashfs")
                .arg(&source)
                .arg(&target)
                // What the container's identity owned (every file of it:
                // see spec::OwnedLayers) becomes root's in the image, as
                // enroot's export does; imported again it is the next
                // container identity's.
                .args([
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-no-xattrs",
                    "-all-root",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(log_for_child))
                .status()
                .is_ok_and(|s| s.success())
    });
    let messages = read_log(log);
    let finish = || -> Result<(), SaveError> {
        if !packed {
            return Err(SaveError::Mksquashfs {
                uid,
                message: messages
                    .lines()
                    .last()
                    .unwrap_or("cannot run it (apt-get install squashfs-tools)")
                    .to_string(),
            });
        }
        let published = as_user::as_user(uid, gid, &user.groups, || {
            let Ok(file) = crate::sys::openat2(
                Some(dir.as_fd()),
                Path::new(&tmp_name),
                libc::O_RDONLY | libc::O_NOFOLLOW,
                crate::sys::RESOLVE_BENEATH | crate::sys::RESOLVE_NO_SYMLINKS,
            ) else {
                return false;
            };
            nix::sys::stat::fchmod(
                file.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .is_ok()
                && nix::fcntl::renameat(
                    Some(dir.as_raw_fd()),
                    tmp_name.as_str(),
                    Some(dir.as_raw_fd()),
                    name,
                )
                .is_ok()
        });
        if !published {
            return Err(SaveError::Publish {
                path: output.to_path_buf(),
                uid,
            });
        }
        Ok(())
    };
    if let Err(e) = finish() {
        as_user::as_user(uid, gid, &user.groups, || {
            nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                tmp_name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .is_ok()
        });
        return Err(e);
    }
    Ok(Saved {
        unreadable: messages
            .lines()
            .filter(|l| l.starts_with("Failed to read file"))
            .count(),
    })
}

/// A detached copy of the root mount of the container `keeper` holds: the
/// container's own filesystem without anything mounted on it. Taken from
/// inside the keeper's mount namespace (a mount of another namespace cannot
/// be cloned), then this process goes back to its own.
fn container_root_tree(keeper: Keeper) -> Result<OwnedFd, SaveError> {
    use nix::sched::{setns, CloneFlags};
    let namespace = |source: std::io::Error| SaveError::Namespace {
        pid: keeper.pid,
        source,
    };
    // The pidfd pins the process: checked after it is taken (the recorded
    // start time, root's, running this same berth), its pid cannot have
    // been reused in between.
    let pidfd = crate::sys::pidfd_open(Pid::from_raw(keeper.pid))
        .map_err(|_| SaveError::NotTheKeeper(keeper.pid))?;
    let exe = |pid: &str| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
    };
    let record = crate::slurm::record::KeeperRecord {
        pid: keeper.pid,
        started: keeper.started,
        ..Default::default()
    };
    let owner_is_root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{}", keeper.pid)).is_ok_and(|m| m.uid() == 0)
    };
    let pid = keeper.pid.to_string();
    if !(record.is_alive() && owner_is_root && exe(&pid).is_some() && exe(&pid) == exe("self")) {
        return Err(SaveError::NotTheKeeper(keeper.pid));
    }
    let own = std::fs::File::open("/proc/self/ns/mnt").map_err(namespace)?;
    setns(&pidfd, CloneFlags::CLONE_NEWNS).map_err(|e| namespace(e.into()))?;
    let tree = crate::sys::open_tree_clone(Path::new("/"), false);
    setns(&own, CloneFlags::CLONE_NEWNS).map_err(|e| namespace(e.into()))?;
    tree.map_err(namespace)
}

/// mksquashfs's messages (at most 1 MiB).
fn read_log(log: OwnedFd) -> String {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::from(log);
    let mut text = String::new();
    let _ = file
        .rewind()
        .and_then(|_| file.take(1 << 20).read_to_string(&mut text));
    text
}
