//! The container's minimal /dev: a tmpfs with the host's harmless device nodes
//! bound in, a private devpts, shm and mqueue. No other host device is there.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::MsFlags;

use crate::syscall::Syscall;

/// Device nodes every container gets, bound from the host's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Clones the host device nodes as detached mounts (before pivot_root), in
/// `DEVICES` order, plus the console terminal when there is one.
pub fn clone_host_devices(sys: &dyn Syscall, console: Option<&Path>) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    for name in DEVICES {
        fds.push(sys.clone_tree(&Path::new("/dev").join(name), false)?);
    }
    if let Some(console) = console {
        fds.push(sys.clone_tree(console, false)?);
    }
    Ok(fds)
}

/// Builds /dev inside the new root (after pivot_root). `fds` come from
/// [`clone_host_devices`]. `privileged` says the mount namespace belongs to the
/// host's user namespace, where gid 5 (tty) exists.
pub fn setup_dev(sys: &dyn Syscall, fds: Vec<OwnedFd>, privileged: bool) -> io::Result<()> {
    let dev = Path::new("/dev");
    sys.mkdir_all(dev, 0o755)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    let mut fds = fds.into_iter();
    for (name, fd) in DEVICES.iter().zip(fds.by_ref()) {
        bind_fd(sys, fd, &dev.join(name))?;
    }
    if let Some(console) = fds.next() {
        bind_fd(sys, console, &dev.join("console"))?;
    }
    let pts = dev.join("pts");
    sys.mkdir_all(&pts, 0o755)?;
    let pts_options = if privileged {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        "newinstance,ptmxmode=0666,mode=0620"
    };
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_options),
    )?;
    sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    sys.mkdir_all(&shm, 0o1777)?;
    sys.mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = dev.join("mqueue");
    sys.mkdir_all(&mqueue, 0o755)?;
    sys.mount(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(Path::new(target), &dev.join(link))?;
    }
    Ok(())
}

/// Attaches the detached mount `fd` of a device node onto `target` (a file).
pub fn bind_fd(sys: &dyn Syscall, fd: OwnedFd, target: &Path) -> io::Result<()> {
    sys.touch(target)?;
    sys.attach_tree(fd, target)
}
