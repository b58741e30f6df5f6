//! The system calls that build a container's root filesystem, behind a trait so
//! the order of mounts can be unit-tested without root: [`LinuxSyscall`] does
//! them, [`RecordingSyscall`] writes them down.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

/// Root filesystem operations.
pub trait Syscall {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Makes a mount and its submounts read-only.
    fn make_readonly(&self, target: &Path) -> io::Result<()>;
    /// Makes a mount and its submounts noexec.
    fn make_noexec(&self, target: &Path) -> io::Result<()>;
    /// `umount2(2)`.
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// Switches the root to the current directory (`pivot_root(".", ".")`) and detaches the old one.
    fn pivot_to_cwd(&self) -> io::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates a directory (with its parents) or an empty file, as the
    /// caller, when missing.
    fn make_path(&self, path: &Path, kind: crate::rootfs::user_paths::Kind) -> io::Result<()> {
        match kind {
            crate::rootfs::user_paths::Kind::Dir => self.mkdir_all(path, 0o755),
            crate::rootfs::user_paths::Kind::File => self.touch(path),
        }
    }
    /// Creates a path for the user when missing: the working directory or a
    /// mount point (see [`crate::rootfs::user_paths`]: root makes only what
    /// lies in the container's own filesystem).
    fn make_user_path(
        &self,
        path: &Path,
        kind: crate::rootfs::user_paths::Kind,
        identity: &crate::spec::Identity,
    ) -> io::Result<()>;
    /// Creates an empty file to mount over, if nothing is there.
    fn touch(&self, path: &Path) -> io::Result<()>;
    /// Creates a symlink, replacing nothing.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Clones the host mount at `path` (recursively when asked) into a
    /// detached mount, to attach after pivot_root (dropped unattached, it
    /// is gone).
    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd>;
    /// Attaches a detached mount from `clone_tree` at `target`.
    fn attach_tree(&self, tree: OwnedFd, target: &Path) -> io::Result<()>;
    /// Gives `path` (not followed if a symlink) to `owner` (uid, gid).
    fn give(&self, path: &Path, owner: (u32, u32)) -> io::Result<()>;
    /// Writes a new file (never a symlink's target, never over anything)
    /// with the rights of the container's identity.
    fn write_new_file(
        &self,
        path: &Path,
        contents: &[u8],
        identity: &crate::spec::Identity,
    ) -> io::Result<()>;
    /// Whether `path` is a symlink (not followed).
    fn is_symlink(&self, path: &Path) -> bool;
    /// Opens a host executable (before pivot_root) to run later with
    /// [`Syscall::run_confined`]; it must be a static ELF.
    fn open_executable(&self, path: &Path) -> io::Result<OwnedFd>;
    /// Runs the executable `program` with `args` in a child that holds no
    /// capability, has no_new_privs and `seccomp` (when given), with its
    /// output discarded; Ok when it exits 0.
    fn run_confined(
        &self,
        program: OwnedFd,
        args: &[String],
        seccomp: Option<&[u8]>,
    ) -> io::Result<()>;
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(nix_io)
    }

    fn make_readonly(&self, target: &Path) -> io::Result<()> {
        crate::sys::make_readonly_recursive(target)
    }

    fn make_noexec(&self, target: &Path) -> io::Result<()> {
        crate::sys::make_noexec_recursive(target)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(nix_io)
    }

    fn pivot_to_cwd(&self) -> io::Result<()> {
        nix::unistd::pivot_root(".", ".").map_err(nix_io)?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(nix_io)?;
        nix::unistd::chdir("/").map_err(nix_io)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(nix_io)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn make_user_path(
        &self,
        path: &Path,
        kind: crate::rootfs::user_paths::Kind,
        identity: &crate::spec::Identity,
    ) -> io::Result<()> {
        use crate::rootfs::user_paths::{self, User};
        if !identity.privileged {
            // The user's own user namespace: everything is made as the user.
            return self.make_path(path, kind);
        }
        let user = User {
            uid: identity.host_uid,
            gid: identity.host_gid,
            groups: &identity.host_groups,
        };
        user_paths::make(path, kind, user)
    }

    fn touch(&self, path: &Path) -> io::Result<()> {
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(path)
            .map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(nix_io)
    }

    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
        crate::sys::open_tree_clone(path, recursive)
    }

    fn attach_tree(&self, tree: OwnedFd, target: &Path) -> io::Result<()> {
        crate::sys::move_mount_to(std::os::fd::AsFd::as_fd(&tree), target)
    }

    fn give(&self, path: &Path, owner: (u32, u32)) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
    }

    fn write_new_file(
        &self,
        path: &Path,
        contents: &[u8],
        identity: &crate::spec::Identity,
    ) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)?
                .write_all(contents)
        };
        match identity.privileged {
            true => crate::as_user::UserRights {
                uid: identity.host_uid,
                gid: identity.host_gid,
                groups: identity.host_groups.clone(),
            }
            .with(write)?,
            false => write(),
        }
    }

    fn is_symlink(&self, path: &Path) -> bool {
        path.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
    }

    fn open_executable(&self, path: &Path) -> io::Result<OwnedFd> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)?;
        if &magic != b"\x7fELF" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not an ELF executable", path.display()),
            ));
        }
        Ok(OwnedFd::from(file))
    }

    fn run_confined(
        &self,
        program: OwnedFd,
        args: &[String],
        seccomp: Option<&[u8]>,
    ) -> io::Result<()> {
        use nix::unistd::ForkResult;
        let argv: Vec<std::ffi::CString> = args
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()).unwrap_or_default())
            .collect();
        let env = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin"];
        // SAFETY: root filesystems are built by a single-threaded process
        // (init, or a keeper), and the child only confines itself and execs.
        #[allow(unsafe_code)]
        let forked = unsafe { crate::sys::fork() };
        match forked.map_err(nix_io)? {
            ForkResult::Child => {
                let confine = || -> io::Result<()> {
                    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
                    for target in [1, 2] {
                        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target)
                            .map_err(nix_io)?;
                    }
                    crate::process::confine::Confinement {
                        groups: None,
                        ids: None,
                        capabilities: &crate::caps::CapsHashSet::new(),
                        filter: crate::process::confine::Filter::Set(seccomp),
                    }
                    .apply()
                    .map_err(io::Error::other)
                };
                if confine().is_ok() {
                    let _ = nix::unistd::fexecve(
                        std::os::fd::AsRawFd::as_raw_fd(&program),
                        &argv,
                        &env,
                    );
                }
                crate::sys::exit_child(127)
            }
            ForkResult::Parent { child } => {
                drop(program);
                use crate::sys::ChildEnd;
                let program = args.first().map(String::as_str).unwrap_or("the program");
                match crate::sys::reap_child(child, true)? {
                    Some(ChildEnd::Exited(0)) => Ok(()),
                    Some(ChildEnd::Exited(code)) => Err(io::Error::other(format!(
                        "{program} exited with status {code}"
                    ))),
                    Some(ChildEnd::Signaled(signo)) => Err(io::Error::other(format!(
                        "{program} was killed by signal {signo}"
                    ))),
                    _ => Err(io::Error::other(format!("{program} stopped"))),
                }
            }
        }
    }
}

/// Records every call as a line of text; every call succeeds.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<String>>,
}

impl RecordingSyscall {
    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) -> io::Result<()> {
        self.calls.borrow_mut().push(line);
        Ok(())
    }
}

fn show(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into())
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {} {} {} {:?} {}",
            show(source),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ))
    }
    fn make_readonly(&self, target: &Path) -> io::Result<()> {
        self.record(format!("readonly {}", target.display()))
    }
    fn make_noexec(&self, target: &Path) -> io::Result<()> {
        self.record(format!("noexec {}", target.display()))
    }
    fn umount(&self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.record(format!("umount {}", target.display()))
    }
    fn pivot_to_cwd(&self) -> io::Result<()> {
        self.record("pivot_root".into())
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {} {mode:o}", path.display()))
    }
    fn make_user_path(
        &self,
        path: &Path,
        kind: crate::rootfs::user_paths::Kind,
        _: &crate::spec::Identity,
    ) -> io::Result<()> {
        self.make_path(path, kind)
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        self.record(format!("touch {}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(format!(
            "symlink {} -> {}",
            link.display(),
            target.display()
        ))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("sethostname {name}"))
    }
    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
        // A real descriptor stands for the detached mount.
        let fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
        let how = if recursive {
            "clone_tree -r"
        } else {
            "clone_tree"
        };
        self.record(format!("{how} {} = {}", path.display(), fd.as_raw_fd()))?;
        Ok(fd)
    }
    fn attach_tree(&self, tree: OwnedFd, target: &Path) -> io::Result<()> {
        self.record(format!("attach {} {}", tree.as_raw_fd(), target.display()))
    }
    fn give(&self, path: &Path, owner: (u32, u32)) -> io::Result<()> {
        self.record(format!("give {}:{} {}", owner.0, owner.1, path.display()))
    }
    fn write_new_file(
        &self,
        path: &Path,
        contents: &[u8],
        identity: &crate::spec::Identity,
    ) -> io::Result<()> {
        self.record(format!(
            "write_new_file {} as {} ({} bytes)",
            path.display(),
            identity.host_uid,
            contents.len()
        ))
    }
    fn is_symlink(&self, _path: &Path) -> bool {
        false
    }
    fn open_executable(&self, path: &Path) -> io::Result<OwnedFd> {
        self.record(format!("open_executable {}", path.display()))?;
        Ok(OwnedFd::from(std::fs::File::open("/dev/null")?))
    }
    fn run_confined(
        &self,
        program: OwnedFd,
        args: &[String],
        seccomp: Option<&[u8]>,
    ) -> io::Result<()> {
        self.record(format!(
            "run_confined {} {} seccomp={}",
            program.as_raw_fd(),
            args.join(" "),
            seccomp.is_some()
        ))
    }
}
