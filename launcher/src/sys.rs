//! The few raw system calls nix does not wrap. Every `unsafe` block of the
//! launcher lives in this file.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

fn path_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Forks into new namespaces (`clone(2)` without a new stack, like `fork`).
/// Returns `None` in the child.
///
/// # Safety
/// The caller must be single-threaded (the child is a copy of this thread
/// only: a lock another thread held would stay held in it for ever).
pub unsafe fn clone_into_namespaces(flags: CloneFlags) -> nix::Result<Option<Pid>> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone with a NULL stack behaves like fork(2): the child continues
    // on a copy of the caller's stack. No pointer arguments are passed; the
    // caller is single-threaded (this function's contract).
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Like [`clone_into_namespaces`], with the child born in the cgroup v2
/// directory `cgroup` (`clone3(2)` with `CLONE_INTO_CGROUP`, Linux 5.7):
/// moving a process in later waits for an RCU grace period, milliseconds.
/// ENOSYS or E2BIG from an older kernel.
///
/// # Safety
/// The caller must be single-threaded, as for [`clone_into_namespaces`].
pub unsafe fn clone_into_cgroup(
    flags: CloneFlags,
    cgroup: BorrowedFd<'_>,
) -> nix::Result<Option<Pid>> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: u64::from(flags.bits() as u32) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 reads `args` (a live clone_args of the size passed);
    // with no stack it behaves like fork(2), the child continuing on a copy
    // of the caller's stack. No pointer is written. berth calls this while
    // single-threaded, so no lock held by another thread is copied.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

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
    )
}

/// Makes a detached mount tree (from [`open_tree_clone_fd`]) private,
/// nosuid and nodev, all of it (`mount_setattr(2)` with `AT_EMPTY_PATH |
/// AT_RECURSIVE`): a tree cloned from a shared host mount would otherwise
/// share mount events with the host once attached in a container, and a
/// user's bind mount brings no setuid file or device node that works.
pub fn make_tree_private(tree: BorrowedFd<'_>) -> io::Result<()> {
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    mount_setattr(
        tree.as_raw_fd(),
        c"",
        (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        libc::MS_PRIVATE,
    )
}

/// `mount_setattr(2)`: sets mount attributes `attr_set` and propagation
/// `propagation` (0: unchanged) on `path` relative to `dir`.
fn mount_setattr(
    dir: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    attr_set: u64,
    propagation: u64,
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
        userns_fd: 0,
    };
    // SAFETY: path is NUL-terminated, dir is AT_FDCWD or a live descriptor,
    // and attr a valid mount_attr of the size passed; the kernel only reads.
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

/// Loads a compiled seccomp BPF program (an array of `sock_filter`) for this
/// thread. no_new_privs must already be set.
pub fn load_seccomp_program(program: &[u8]) -> io::Result<()> {
    const FILTER_SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if program.is_empty()
        || !program.len().is_multiple_of(FILTER_SIZE)
        || program.len() / FILTER_SIZE > u16::MAX as usize
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed seccomp program",
        ));
    }
    // Copy into properly aligned storage.
    let filters: Vec<libc::sock_filter> = program
        .chunks_exact(FILTER_SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filters.len() as u16,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `filters`, which outlives the call; the kernel
    // copies the program before returning.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Closes every descriptor from `first` upwards.
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers; the caller owns nothing it
    // still uses above `first`.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Marks every descriptor from `first` upwards close-on-exec, so nothing of
/// the host leaks into the container's command.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes plain integers; with CLOSE_RANGE_CLOEXEC it
    // closes nothing, it only sets FD_CLOEXEC.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Restores the default disposition of every catchable signal.
pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; invalid signal
        // numbers only make signal() fail, which is ignored.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Ignores SIGCHLD, so the kernel reaps this process's children (orphans
/// handed to a pid namespace's init included) as they exit.
pub fn reap_children_automatically() {
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
}

/// `fork(2)`.
///
/// # Safety
/// The caller must be single-threaded (a lock another thread held would
/// stay held in the child for ever), or the child must only make system
/// calls and exit or exec.
pub unsafe fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: the caller's contract above is nix's.
    unsafe { nix::unistd::fork() }
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

/// Sets the calling thread's (only this thread's, unlike glibc's wrappers)
/// filesystem uid and gid and supplementary groups, for permission checks
/// made on a user's behalf. Returns the previous fsuid and fsgid. Capability
/// bits tied to fsuid 0 go when the fsuid leaves 0 and come back with it.
pub fn set_thread_fs_identity(uid: u32, gid: u32, groups: &[u32]) -> io::Result<(u32, u32)> {
    // SAFETY: setgroups reads `groups.len()` gids from a live slice.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setfsgid/setfsuid take an integer and return the previous id;
    // calling them again with the same id reads back whether it was taken.
    let (old_gid, old_uid, now_gid, now_uid) = unsafe {
        let old_gid = libc::syscall(libc::SYS_setfsgid, gid) as u32;
        let now_gid = libc::syscall(libc::SYS_setfsgid, gid) as u32;
        let old_uid = libc::syscall(libc::SYS_setfsuid, uid) as u32;
        let now_uid = libc::syscall(libc::SYS_setfsuid, uid) as u32;
        (old_gid, old_uid, now_gid, now_uid)
    };
    if now_gid != gid || now_uid != uid {
        return Err(io::Error::from(io::ErrorKind::PermissionDenied));
    }
    Ok((old_uid, old_gid))
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

/// Takes ownership of a raw descriptor that this process opened and whose
/// ownership was handed around as an integer (see `syscall::Syscall::clone_tree`),
/// or that it inherited and alone uses (the container's terminal).
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process: the
/// returned owner closes it.
pub unsafe fn take_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller's contract above.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Sends signal number `signo` (real-time ones included, which
/// `nix::sys::signal::Signal` cannot name) to process `pid`.
pub fn send_signal(pid: nix::unistd::Pid, signo: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid.as_raw(), signo) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How a child ended, by raw numbers (a real-time signal included), or
/// stopped under ptrace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// exit(code).
    Exited(i32),
    /// Killed by signal number.
    Signaled(i32),
    /// Stopped for its tracer (the caller): it traced itself, PTRACE_TRACEME.
    TraceStopped,
}

/// Blocks every signal but `signo`.
pub fn unblock_only(signo: i32) -> io::Result<()> {
    // SAFETY: sigfillset/sigdelset write into a local sigset_t;
    // sigprocmask reads it and takes no old-set pointer.
    let ret = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigdelset(&mut set, signo);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reaps child `pid` if it has ended (`None`: it runs, or only stopped or
/// continued); with `block`, waits for it to end, stop or continue first.
/// A traced child's stops are reported too (waitpid always does).
pub fn reap_child(pid: nix::unistd::Pid, block: bool) -> io::Result<Option<ChildEnd>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: waitpid writes one int through a valid pointer.
    let ret = unsafe { libc::waitpid(pid.as_raw(), &mut status, flags) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(if ret == 0 {
        None
    } else if libc::WIFEXITED(status) {
        Some(ChildEnd::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ChildEnd::Signaled(libc::WTERMSIG(status)))
    } else if libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP {
        Some(ChildEnd::TraceStopped)
    } else {
        None
    })
}

/// `pidfd_send_signal(2)`: signal number `signo` to the process `pidfd` is.
pub fn pidfd_send_signal(pidfd: std::os::fd::BorrowedFd<'_>, signo: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with a live descriptor, a signal number, no
    // siginfo and no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits, and
/// that `setns(2)` accepts to join all of its namespaces at once.
pub fn pidfd_open(pid: nix::unistd::Pid) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as i32) })
}

/// Ends a forked child at once, without running atexit handlers or flushing
/// buffers it shares with its parent.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// `bpf(BPF_PROG_LOAD)` of a `BPF_PROG_TYPE_CGROUP_DEVICE` program made of
/// `insns` (each one `struct bpf_insn` as a little-endian u64). When the
/// verifier refuses it, the load is retried with its log to say why.
pub fn load_device_filter(insns: &[u64]) -> io::Result<std::os::fd::OwnedFd> {
    bpf_prog_load_device(insns, None).or_else(|e| {
        let mut log = vec![0u8; 1 << 20];
        match bpf_prog_load_device(insns, Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0').trim();
                let tail = &text[text.len().saturating_sub(400)..];
                Err(io::Error::new(
                    e.kind(),
                    format!("cannot load the device filter: {e}; verifier: {tail}"),
                ))
            }
        }
    })
}

fn bpf_prog_load_device(insns: &[u64], log: Option<&mut [u8]>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    let license = c"GPL";
    // union bpf_attr, the BPF_PROG_LOAD part: prog_type, insn_cnt, insns,
    // license, log_level, log_size, log_buf (offsets 0, 4, 8, 16, 24, 28, 32).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    if let Some(log) = log {
        attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
        attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    }
    // SAFETY: attr is a zero-filled bpf_attr whose pointers (insns, license,
    // and log when given) stay valid for the call; the kernel writes at most
    // log_size bytes to log and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `bpf(BPF_PROG_ATTACH)` of a device filter to the cgroup directory
/// `cgroup`, alongside programs of its ancestors (`BPF_F_ALLOW_MULTI`).
pub fn attach_device_filter(cgroup: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    // union bpf_attr, the BPF_PROG_ATTACH part: target_fd, attach_bpf_fd,
    // attach_type, attach_flags.
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: attr is a zero-filled bpf_attr holding two descriptors that are
    // open for the duration of the call; nothing is written back.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

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
    // SAFETY: fd is live; the argument 0 means "do not steal".
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
