//! Processes: clone into namespaces or a cgroup, fork, descriptors, signals,
//! reaping, pidfds, and a thread's filesystem identity.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

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

/// A user namespace that maps id 0 to host `uid` and `gid` (one id each),
/// for [`super::idmap_tree`]: a file root owns on disk then shows as
/// `uid:gid`'s. Made by a child that only waits on a pipe (so it is safe
/// from any thread); the namespace outlives it through the descriptor.
pub fn userns_mapping_root_to(uid: u32, gid: u32) -> io::Result<std::os::fd::OwnedFd> {
    let (wait_r, wait_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let flags = libc::CLONE_NEWUSER as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone with a NULL stack behaves like fork(2); the child makes
    // only async-signal-safe calls (read, _exit), so any thread may call this.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        let mut byte = 0u8;
        // SAFETY: closes the child's copy of the write end (so that the
        // parent's close is EOF), reads at most one byte into a live local,
        // then _exit.
        unsafe {
            libc::close(wait_w.as_raw_fd());
            libc::read(wait_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0)
        }
    }
    let child = Pid::from_raw(ret as i32);
    drop(wait_r);
    let proc = format!("/proc/{child}");
    let made = std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))
        .and_then(|()| std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n")))
        .and_then(|()| {
            std::fs::File::open(format!("{proc}/ns/user")).map(std::os::fd::OwnedFd::from)
        });
    drop(wait_w); // the child reads EOF and exits
    reap_child(child, true)?;
    made
}

/// A user namespace **owned by** host `uid` that maps its root to `uid`
/// and `gid` (one id each): a process of that user joins it with `setns`
/// and is root there (with every capability, inside it only), without
/// ever being dumpable or writing maps of its own. Made by a child that
/// takes the user's ids, unshares and waits, while the caller (root, with
/// the host's /proc) writes its maps.
pub fn userns_owned_by(uid: u32, gid: u32) -> io::Result<std::os::fd::OwnedFd> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let flags = libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone with a NULL stack behaves like fork(2); the child makes
    // only async-signal-safe calls (set*id, unshare, read, write, _exit).
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        // SAFETY: plain system calls on integers and live locals, then _exit.
        unsafe {
            libc::close(ready_r.as_raw_fd());
            libc::close(done_w.as_raw_fd());
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0
                && libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte: u8 = if ok { b'R' } else { b'E' };
            libc::write(ready_w.as_raw_fd(), (&byte as *const u8).cast(), 1);
            let mut wait = 0u8;
            libc::read(done_r.as_raw_fd(), (&mut wait as *mut u8).cast(), 1);
            libc::_exit(0)
        }
    }
    let child = Pid::from_raw(ret as i32);
    drop(ready_w);
    drop(done_r);
    let mut said = [0u8; 1];
    let ready = nix::unistd::read(ready_r.as_raw_fd(), &mut said).map_err(io::Error::from);
    let proc = format!("/proc/{child}");
    let made = match ready {
        // setgroups denied before the gid map: its root could otherwise
        // drop a group that denies the user a file ("deny by group").
        Ok(1) if said[0] == b'R' => {
            std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))
                .and_then(|()| std::fs::write(format!("{proc}/setgroups"), "deny"))
                .and_then(|()| std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n")))
                .and_then(|()| {
                    std::fs::File::open(format!("{proc}/ns/user")).map(std::os::fd::OwnedFd::from)
                })
        }
        Ok(_) => Err(io::Error::other("cannot make a user namespace as the user")),
        Err(e) => Err(e),
    };
    drop(done_w); // the child reads EOF and exits
    reap_child(child, true)?;
    made
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

/// Closes every descriptor from 3 upwards but those in `keep`.
pub fn close_all_but(keep: &[std::os::fd::RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd >= 3)
        .map(|fd| *fd as u32)
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > first {
            // SAFETY: close_range takes plain integers; the caller keeps
            // only the descriptors it named.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0) };
            if ret == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        first = fd.saturating_add(1);
    }
    Ok(())
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
/// A traced child's stops are reported too (waitpid always does). Unlike
/// nix's waitpid, a child killed by a real-time signal is reported (nix
/// fails after reaping it, and the end is lost).
pub fn reap_child(pid: nix::unistd::Pid, block: bool) -> io::Result<Option<ChildEnd>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    Ok(wait_raw(pid.as_raw(), flags)?.and_then(|(_, status)| ChildEnd::of_status(status)))
}

/// Reaps any one child that has ended, without blocking: its pid and how
/// it ended (None inside: it only stopped or continued); None when no child
/// is ready; an error (ECHILD) when there is no child at all.
pub fn reap_any_child() -> io::Result<Option<(nix::unistd::Pid, Option<ChildEnd>)>> {
    Ok(wait_raw(-1, libc::WNOHANG)?
        .map(|(pid, status)| (nix::unistd::Pid::from_raw(pid), ChildEnd::of_status(status))))
}

/// `waitpid(2)`: the pid and raw status reported, or None with WNOHANG
/// when nothing is.
fn wait_raw(pid: i32, flags: i32) -> io::Result<Option<(i32, i32)>> {
    let mut status = 0;
    // SAFETY: waitpid writes one int through a valid pointer.
    let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some((pid, status))),
    }
}

impl ChildEnd {
    /// How a raw wait status ended the child, if it did (or stopped it for
    /// its tracer).
    fn of_status(status: i32) -> Option<ChildEnd> {
        if libc::WIFEXITED(status) {
            Some(ChildEnd::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ChildEnd::Signaled(libc::WTERMSIG(status)))
        } else if libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP {
            Some(ChildEnd::TraceStopped)
        } else {
            None
        }
    }

    /// The shell's exit code for this end: the code, or 128+N for signal
    /// N (real-time signals included); None for a trace stop.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            ChildEnd::Exited(code) => Some(code),
            ChildEnd::Signaled(signo) => Some(128 + signo),
            ChildEnd::TraceStopped => None,
        }
    }
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
