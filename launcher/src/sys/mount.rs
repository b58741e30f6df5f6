//! The new mount API and openat2: detached trees, read-only and private
//! trees, moving a tree into place, opening without following links.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;

use super::*;

/// Makes the mount at `path` and every mount below it read-only
/// (`mount_setattr(2)` with `AT_RECURSIVE`), keeping their other flags, which
/// a `MS_REMOUNT` would have to repeat (and cannot, for locked mounts).
pub fn make_readonly_recursive(path: &Path) -> io::Result<()> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let c_path = path_cstring(path)?;
    mount_setattr(
        libc::AT_FDCWD,
        &c_path,
        libc::AT_RECURSIVE as libc::c_uint,
        MOUNT_ATTR_RDONLY,
        0,
        None,
    )
}

/// Makes the mount at `path` and every mount below it noexec, keeping
/// their other flags (as [`make_readonly_recursive`]).
pub fn make_noexec_recursive(path: &Path) -> io::Result<()> {
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    let c_path = path_cstring(path)?;
    mount_setattr(
        libc::AT_FDCWD,
        &c_path,
        libc::AT_RECURSIVE as libc::c_uint,
        MOUNT_ATTR_NOEXEC,
        0,
        None,
    )
}

/// Makes a detached mount tree (from [`open_tree_clone_fd`]) private,
/// nosuid and nodev, all of it (`mount_setattr(2)` with `AT_EMPTY_PATH |
/// AT_RECURSIVE`): a tree cloned from a shared host mount would otherwise
/// share mount events with the host once attached in a container, and a
/// user's bind mount brings no setuid file or device node that works.
pub fn make_tree_private(tree: BorrowedFd<'_>) -> io::Result<()> {
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    make_tree_private_with(tree, MOUNT_ATTR_NODEV)
}

/// [`make_tree_private`] for a bind mount of one harmless device node
/// (`/dev/null`...: `mounts::is_harmless_device`), which nodev would make
/// unusable: private and nosuid only.
pub fn make_device_tree_private(tree: BorrowedFd<'_>) -> io::Result<()> {
    make_tree_private_with(tree, 0)
}

fn make_tree_private_with(tree: BorrowedFd<'_>, more: u64) -> io::Result<()> {
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    mount_setattr(
        tree.as_raw_fd(),
        c"",
        (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        MOUNT_ATTR_NOSUID | more,
        libc::MS_PRIVATE,
        None,
    )
}

/// Makes a detached mount (from [`open_tree_clone`]) an idmapped one
/// (`MOUNT_ATTR_IDMAP`): a file owned by id N on disk shows as the host id
/// that N is mapped to in user namespace `userns` (see
/// [`userns_mapping_root_to`]). It is made read-only, nosuid, nodev and
/// private too: overlayfs only reads its layers.
pub fn idmap_tree(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
        MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        libc::MS_PRIVATE,
        Some(userns),
    )
}

/// `mount_setattr(2)`: sets mount attributes `attr_set` and propagation
/// `propagation` (0: unchanged) on `path` relative to `dir`; with
/// `MOUNT_ATTR_IDMAP`, the user namespace whose maps it takes.
fn mount_setattr(
    dir: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    attr_set: u64,
    propagation: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    // SAFETY: path is NUL-terminated, dir is AT_FDCWD or a live descriptor
    // (as is the user namespace's, borrowed for the call), and attr a valid
    // mount_attr of the size passed; the kernel only reads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets an extended attribute on an open file (`fsetxattr(2)`).
pub fn set_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> nix::Result<()> {
    let c_name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: fd is a live descriptor, c_name is NUL-terminated and value a
    // valid slice whose length is passed; the kernel only reads them.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// `openat(2)` returning an owned descriptor.
pub fn openat_owned(
    dir: Option<std::os::fd::RawFd>,
    path: &std::ffi::OsStr,
    flags: nix::fcntl::OFlag,
    mode: nix::sys::stat::Mode,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::openat(dir, path, flags, mode)?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Clones the mount tree at `path` into a detached mount (`open_tree(2)` with
/// `OPEN_TREE_CLONE`), recursively when asked. The descriptor can be attached
/// anywhere later with [`move_mount_to`], even after pivot_root.
///
/// `path` must be canonical: it is resolved with `RESOLVE_NO_SYMLINKS`, so a
/// component swapped for a symlink after berth checked the path (to aim a
/// root-made bind mount at something the user may not read) is refused.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<std::os::fd::OwnedFd> {
    let path_fd = openat2(
        None,
        path,
        libc::O_PATH | libc::O_CLOEXEC,
        RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )?;
    open_tree_clone_fd(path_fd.as_fd(), recursive)
}

/// Clones the mount tree of the object `fd` is open on into a detached mount
/// (`open_tree(2)` with `OPEN_TREE_CLONE` and `AT_EMPTY_PATH`): what was
/// opened, not whatever a path names later.
pub fn open_tree_clone_fd(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: fd is live and the empty path is NUL-terminated; open_tree
    // returns a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as i32) })
}

/// `RESOLVE_NO_XDEV`: no crossing of mount points.
pub const RESOLVE_NO_XDEV: u64 = 0x01;
/// `RESOLVE_NO_MAGICLINKS`: no `/proc/PID/fd/N`, `/proc/PID/root`, ... links.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `RESOLVE_NO_SYMLINKS`: no symlink anywhere in the path.
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// `RESOLVE_BENEATH`: the path may not leave the starting directory.
pub const RESOLVE_BENEATH: u64 = 0x08;

/// `openat2(2)`: opens `path` (relative to `dir`, or the working directory)
/// with `flags` (`O_*`) and the `RESOLVE_*` restrictions `resolve`.
pub fn openat2(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    let c_path = path_cstring(path)?;
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: c_path is NUL-terminated and `how` a valid open_how of the size
    // passed; openat2 returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a detached mount from [`open_tree_clone`] at `target` (`move_mount(2)`).
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let c_target = path_cstring(target)?;
    // SAFETY: tree is a live descriptor, both strings are NUL-terminated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
