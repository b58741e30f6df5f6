//! User-requested bind mounts: parsing `SRC:DST[:ro|rw]` and the admin's policy.

use std::path::{Component, Path, PathBuf};

use slurm_conf::MountsConfig;

use crate::spec::BindMount;

/// A refused mount request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MountError {
    /// The text is not `SRC:DST[:ro|rw]`.
    #[error("bad mount {spec:?}: {why} (expected SRC:DST[:ro|rw] with an absolute DST)")]
    Syntax {
        /// The request as written.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// The source does not exist.
    #[error("mount source {0} does not exist")]
    Missing(PathBuf),
    /// The admin's policy refuses the source.
    #[error("mount source {0} is not allowed by the berth configuration (mounts.allowed_prefixes / mounts.denied_prefixes)")]
    NotAllowed(PathBuf),
    /// The source holds a path the policy refuses (it would come along).
    #[error("mount source {path} holds {denied}, which may not be mounted (mounts.denied_prefixes): mount a directory below {path} instead")]
    Contains {
        /// The source.
        path: PathBuf,
        /// The denied path below it.
        denied: PathBuf,
    },
    /// The user may not read the source.
    #[error("mount source {path}: permission denied for uid {uid}")]
    PermissionDenied {
        /// The source.
        path: PathBuf,
        /// The user.
        uid: u32,
    },
}

/// A bind mount as written, `SRC:DST[:ro|rw]`, checked without looking at
/// any file: the one parser of that syntax, for `berth run --mount`, the
/// SPANK plugin's srun-time check of `--container-mounts` and the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The source as written (relative: from the caller's directory).
    pub source: String,
    /// Where it goes in the container: absolute, no `..`, not `/`.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl MountSpec {
    /// Parses one `SRC:DST[:ro|rw]`.
    pub fn parse(spec: &str) -> Result<MountSpec, MountError> {
        let syntax = |why: &str| MountError::Syntax {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, flag] => return Err(syntax(&format!("unknown flag {flag:?}"))),
            _ => return Err(syntax("wrong number of ':' separated fields")),
        };
        if src.is_empty() {
            return Err(syntax("empty source"));
        }
        let dst = Path::new(dst);
        if !dst.is_absolute() {
            return Err(syntax("destination is not an absolute path"));
        }
        if dst.components().any(|c| c == Component::ParentDir) {
            return Err(syntax("destination contains '..'"));
        }
        if dst == Path::new("/") {
            return Err(syntax("cannot mount over the container's root"));
        }
        Ok(MountSpec {
            source: src.to_string(),
            destination: dst.to_path_buf(),
            read_only,
        })
    }
}

impl std::fmt::Display for MountSpec {
    /// `SRC:DST[:ro]`, as `parse` reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.destination.display())?;
        if self.read_only {
            write!(f, ":ro")?;
        }
        Ok(())
    }
}

/// Parses one `--mount` value. Relative sources are taken from `cwd`.
pub fn parse_mount(spec: &str, cwd: &Path) -> Result<BindMount, MountError> {
    let MountSpec {
        source,
        destination,
        read_only,
    } = MountSpec::parse(spec)?;
    let source = cwd.join(source);
    let source = source
        .canonicalize()
        .map_err(|_| MountError::Missing(source.clone()))?;
    Ok(BindMount {
        source,
        destination,
        read_only,
        tree: None,
    })
}

/// Checks a (canonical) source against the admin's prefixes.
pub fn check_policy(mount: &BindMount, policy: &MountsConfig) -> Result<(), MountError> {
    let allowed = policy
        .allowed_prefixes
        .iter()
        .any(|p| mount.source.starts_with(p));
    let denied = policy
        .denied_prefixes
        .iter()
        .any(|p| mount.source.starts_with(p));
    if !allowed || denied {
        return Err(MountError::NotAllowed(mount.source.clone()));
    }
    // A source is bound with what is mounted below it: one above a denied
    // path (`/` holds /proc, /sys, /dev) would bring that path in.
    if let Some(inside) = policy
        .denied_prefixes
        .iter()
        .find(|p| p.starts_with(&mount.source))
    {
        return Err(MountError::Contains {
            path: mount.source.clone(),
            denied: inside.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holding_a_denied_path_is_refused() {
        let policy = MountsConfig::default();
        let mount = |src: &str| BindMount {
            source: PathBuf::from(src),
            destination: PathBuf::from("/host"),
            read_only: true,
            tree: None,
        };
        let err = check_policy(&mount("/"), &policy).unwrap_err().to_string();
        assert!(err.contains("holds /proc"), "{err}");
        assert!(check_policy(&mount("/dev/shm"), &policy).is_err());
        assert!(check_policy(&mount("/var/run"), &policy).is_err()); // holds docker.sock
        assert!(check_policy(&mount("/home"), &policy).is_ok());
    }

    #[test]
    fn parses_flags_and_refuses_bad_specs() {
        let cwd = Path::new("/");
        let m = parse_mount("/tmp:/data:ro", cwd).unwrap();
        assert_eq!(
            (m.source.as_path(), m.destination.as_path(), m.read_only),
            (Path::new("/tmp"), Path::new("/data"), true)
        );
        assert!(!parse_mount("/tmp:/data", cwd).unwrap().read_only);
        for written in ["rel/src:/data:ro", "/a:/b"] {
            assert_eq!(MountSpec::parse(written).unwrap().to_string(), written);
        }
        for bad in [
            "/tmp",
            "/tmp:data",
            "/tmp:/a:rx",
            "/tmp:/a/../b",
            ":/a",
            "/tmp:/",
            "a:b:c:d",
        ] {
            assert!(
                matches!(parse_mount(bad, cwd), Err(MountError::Syntax { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            parse_mount("/no/such/dir:/a", cwd),
            Err(MountError::Missing(PathBuf::from("/no/such/dir")))
        );
    }

    #[test]
    fn policy_prefixes() {
        let policy = MountsConfig::default();
        let m = |s: &str| BindMount {
            source: PathBuf::from(s),
            destination: PathBuf::from("/x"),
            read_only: false,
            tree: None,
        };
        assert!(check_policy(&m("/home/alice"), &policy).is_ok());
        assert!(check_policy(&m("/proc/1"), &policy).is_err());
        assert!(check_policy(&m("/run/docker.sock"), &policy).is_err());
        let only_data = MountsConfig {
            allowed_prefixes: vec![PathBuf::from("/data")],
            ..MountsConfig::default()
        };
        assert!(check_policy(&m("/data/x"), &only_data).is_ok());
        assert!(check_policy(&m("/database"), &only_data).is_err());
    }
}
