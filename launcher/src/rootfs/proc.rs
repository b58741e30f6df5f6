//! /proc and /sys for the container: a fresh /proc of the container's pid
//! namespace with the kernel's sensitive files masked, and a read-only /sys.

use std::io;
use std::path::Path;

use nix::mount::MsFlags;

use crate::syscall::Syscall;

/// Paths hidden from the container (bound over with /dev/null, or an empty
/// read-only tmpfs for directories), as runc and Docker mask them.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/sysrq-trigger",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/debug",
    "/sys/kernel/security",
];

/// Paths made read-only.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"];

const PROC_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts the container's /proc at `target` (the new root's /proc, before
/// pivot_root: the kernel lets a user namespace mount proc only while another
/// proc is fully visible in the mount namespace). Refuses an image whose
/// /proc is a symlink, which would point the mount outside the new root.
pub fn mount_proc(sys: &dyn Syscall, target: &Path, hidepid: bool) -> io::Result<()> {
    if sys.is_symlink(target) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the image's /proc is a symlink",
        ));
    }
    sys.mkdir_all(target, 0o555)?;
    sys.mount(
        Some(Path::new("proc")),
        target,
        Some("proc"),
        PROC_FLAGS,
        hidepid.then_some("hidepid=invisible"),
    )
}

/// Mounts a read-only /sys: a fresh sysfs where the namespace may, else the
/// host's bound in (rootless: sysfs needs a network namespace of our own).
/// `host_sys` is a detached recursive clone of the host's /sys.
pub fn mount_sys(sys: &dyn Syscall, host_sys: std::os::fd::OwnedFd) -> io::Result<()> {
    let target = Path::new("/sys");
    sys.mkdir_all(target, 0o555)?;
    let fresh = sys.mount(
        Some(Path::new("sysfs")),
        target,
        Some("sysfs"),
        PROC_FLAGS | MsFlags::MS_RDONLY,
        None,
    );
    if fresh.is_err() {
        sys.attach_tree(host_sys, target)?;
    }
    sys.make_readonly(target)
}

/// Masks and write-protects the sensitive parts of /proc and /sys.
pub fn protect_kernel_files(
    sys: &dyn Syscall,
    is_dir: &dyn Fn(&Path) -> Option<bool>,
) -> io::Result<()> {
    for path in MASKED_PATHS.iter().map(Path::new) {
        match is_dir(path) {
            None => continue,
            Some(true) => sys.mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                PROC_FLAGS | MsFlags::MS_RDONLY,
                Some("size=0"),
            )?,
            Some(false) => sys.mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    for path in READONLY_PATHS.iter().map(Path::new) {
        if is_dir(path).is_none() {
            continue;
        }
        sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        sys.make_readonly(path)?;
    }
    Ok(())
}
