//! The container's seccomp filter: compiled from [`profile`] with libseccomp
//! once, cached as raw BPF by checksum, and loaded with a single prctl at each
//! start (compiling costs ~8 ms; loading the cached program almost nothing).

pub mod profile;

use std::fs;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use sha2::{Digest, Sha256};

/// A seccomp error.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// libseccomp refused the profile.
    #[error("cannot compile the seccomp profile: {0}")]
    Compile(String),
    /// The cache could not be read or written.
    #[error("seccomp cache {path}: {source}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn compile_err(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile(e.to_string())
}

/// A text that changes whenever the compiled program would.
fn profile_fingerprint() -> String {
    let version = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    format!(
        "berth-seccomp-v3 optimize=2 arch={} libseccomp={version} allowed={:?} personalities={:?} clone={:#x} ioctl-denied={:?}",
        std::env::consts::ARCH,
        profile::ALLOWED,
        profile::ALLOWED_PERSONALITIES,
        profile::CLONE_NAMESPACE_FLAGS,
        profile::DENIED_IOCTLS,
    )
}

/// Compiles the default profile to a BPF program (an array of `sock_filter`).
pub fn compile_default_profile() -> Result<Vec<u8>, SeccompError> {
    let eperm = ScmpAction::Errno(libc::EPERM);
    let mut filter = ScmpFilterContext::new_filter(eperm).map_err(compile_err)?;
    filter.set_ctl_nnp(false).map_err(compile_err)?;
    // A binary tree by syscall number: a shorter walk per syscall than the
    // default linear chain.
    filter.set_ctl_optimize(2).map_err(compile_err)?;
    for name in profile::ALLOWED {
        match ScmpSyscall::from_name(name) {
            Ok(syscall) => filter
                .add_rule(ScmpAction::Allow, syscall)
                .map_err(compile_err)?,
            Err(_) => tracing::debug!(syscall = name, "not known to this libseccomp, left out"),
        }
    }
    for value in profile::ALLOWED_PERSONALITIES {
        filter
            .add_rule_conditional(
                ScmpAction::Allow,
                ScmpSyscall::from_name("personality").map_err(compile_err)?,
                &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, *value)],
            )
            .map_err(compile_err)?;
    }
    filter
        .add_rule_conditional(
            ScmpAction::Allow,
            ScmpSyscall::from_name("clone").map_err(compile_err)?,
            &[ScmpArgCompare::new(
                0,
                ScmpCompareOp::MaskedEqual(profile::CLONE_NAMESPACE_FLAGS),
                0,
            )],
        )
        .map_err(compile_err)?;
    // ioctl, but for the terminal requests that type into, or act on, a
    // terminal the container may share with its caller (the first line is
    // a session of its own). libseccomp takes no "all but" rule, so the
    // allowed requests are spelt out as masked tests on the low 32 bits
    // (the kernel reads the request as 32 bits: upper bits, sign-extended
    // or not, change nothing).
    let ioctl = ScmpSyscall::from_name("ioctl").map_err(compile_err)?;
    for (mask, value) in profile::requests_except(profile::DENIED_IOCTLS) {
        filter
            .add_rule_conditional(
                ScmpAction::Allow,
                ioctl,
                &[ScmpArgCompare::new(
                    1,
                    ScmpCompareOp::MaskedEqual(mask),
                    value,
                )],
            )
            .map_err(compile_err)?;
    }
    // clone3's flags are behind a pointer seccomp cannot read: answer ENOSYS so
    // libc falls back to clone, which is checked above.
    if let Ok(clone3) = ScmpSyscall::from_name("clone3") {
        filter
            .add_rule(ScmpAction::Errno(libc::ENOSYS), clone3)
            .map_err(compile_err)?;
    }
    let mut file = tempfile_in_memory()?;
    filter.export_bpf(&mut file).map_err(compile_err)?;
    let mut program = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(|source| SeccompError::Cache {
            path: PathBuf::from("memfd"),
            source,
        })?;
    Ok(program)
}

fn tempfile_in_memory() -> Result<fs::File, SeccompError> {
    nix::sys::memfd::memfd_create(
        c"berth-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map(fs::File::from)
    .map_err(|e| SeccompError::Cache {
        path: PathBuf::from("memfd"),
        source: e.into(),
    })
}

/// Returns the compiled default program, from `cache_dir` when it is there,
/// compiling and caching it (atomically) when it is not. A cache that cannot
/// be written (a read-only store) only costs the compile time.
pub fn default_program(cache_dir: &Path) -> Result<Vec<u8>, SeccompError> {
    let key = hex::encode(Sha256::digest(profile_fingerprint().as_bytes()));
    let path = cache_dir.join(format!("{key}.bpf"));
    if let Ok(program) = fs::read(&path) {
        if !program.is_empty() && program.len().is_multiple_of(8) {
            return Ok(program);
        }
    }
    let program = compile_default_profile()?;
    let tmp = cache_dir.join(format!(".{key}.{}", std::process::id()));
    let written = fs::write(&tmp, &program).and_then(|_| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        tracing::debug!(path = %path.display(), error = %e, "cannot cache the compiled seccomp filter");
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let first = default_program(dir.path()).unwrap();
        assert!(first.len() > 100 * 8, "program of {} bytes", first.len());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let second = default_program(dir.path()).unwrap();
        assert_eq!(first, second);
    }

    /// Runs `f` in a child that loaded the default program; its exit code.
    #[allow(unsafe_code)]
    fn in_filtered_child(f: impl FnOnce() -> i32) -> i32 {
        let program = compile_default_profile().unwrap();
        // SAFETY: the child only makes system calls (`f`'s) and exits.
        match unsafe { crate::sys::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = if nix::sys::prctl::set_no_new_privs().is_ok()
                    && crate::sys::load_seccomp_program(&program).is_ok()
                {
                    f()
                } else {
                    99
                };
                crate::sys::exit_child(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("filtered child: {other:?}"),
                }
            }
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn terminal_injection_ioctls_are_refused_others_pass() {
        // On a pipe: TIOCSTI (also with high bits set) and TIOCLINUX fail
        // with EPERM from the filter, TCGETS reaches the kernel (ENOTTY).
        let (r, _w) = nix::unistd::pipe().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        let code = in_filtered_child(|| {
            let errno_of = |request: u64| {
                let byte = 0u8;
                // SAFETY: ioctl on a live pipe descriptor with a pointer to a
                // byte that outlives the call; only the errno is looked at.
                let ret = unsafe { libc::ioctl(fd, request as _, &byte) };
                (ret == -1).then(nix::errno::Errno::last_raw)
            };
            let sti = errno_of(libc::TIOCSTI);
            let sti_high = errno_of(libc::TIOCSTI | (1u64 << 32));
            let linux = errno_of(0x541C);
            let tcgets = errno_of(libc::TCGETS);
            if sti == Some(libc::EPERM)
                && sti_high == Some(libc::EPERM)
                && linux == Some(libc::EPERM)
                && tcgets == Some(libc::ENOTTY)
            {
                0
            } else {
                eprintln!("sti={sti:?} high={sti_high:?} linux={linux:?} tcgets={tcgets:?}");
                1
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "bpf",
            "kexec_load",
            "open_by_handle_at",
            "init_module",
            "finit_module",
            "reboot",
            "userfaultfd",
            "perf_event_open",
        ] {
            assert!(
                !profile::ALLOWED.contains(&name),
                "{name} must not be allowed"
            );
        }
    }
}
