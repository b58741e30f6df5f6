//! User-requested mounts: parsing pyxis's `--container-mounts` syntax
//! (binds, `tmpfs:`, `umount:`) and the admin's policy for bind sources.

use std::path::{Component, Path, PathBuf};

use slurm_conf::MountsConfig;

use crate::spec::BindMount;

/// A refused mount request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MountError {
    /// The text is not `SRC[:DST[:FLAGS]]`, `tmpfs:DST[:OPTIONS]` or `umount:DST`.
    #[error("bad mount {spec:?}: {why} (expected SRC[:DST[:FLAGS]], tmpfs:DST[:OPTIONS] or umount:DST, DST absolute, FLAGS joined by '+')")]
    Syntax {
        /// The request as written.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// The source does not exist.
    #[error("mount source path does not exist: {0}")]
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

/// A flag of a bind mount besides `ro`/`rw`, as pyxis/enroot write them
/// (joined by `+`: `ro+nosuid+rprivate`). berth's bind mounts are always
/// nosuid, nodev and recursive (`rbind`), and private unless a flag says
/// otherwise: `nosuid`, `nodev`, `bind` and `rbind` are accepted as what
/// they already are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountFlag {
    /// nosuid (always).
    NoSuid,
    /// nodev (always).
    NoDev,
    /// noexec: nothing on it can be executed.
    NoExec,
    /// bind (berth binds recursively: as rbind).
    Bind,
    /// rbind (the default).
    RBind,
    /// private propagation (the default), of the mount or of all below it.
    Private { recursive: bool },
    /// slave propagation: accepted and changes nothing (every source tree
    /// is made private first: no host mount event reaches the container).
    Slave { recursive: bool },
    /// unbindable: it cannot be bind-mounted again.
    Unbindable { recursive: bool },
}

impl MountFlag {
    const ALL: [(&'static str, MountFlag); 11] = [
        ("nosuid", MountFlag::NoSuid),
        ("nodev", MountFlag::NoDev),
        ("noexec", MountFlag::NoExec),
        ("bind", MountFlag::Bind),
        ("rbind", MountFlag::RBind),
        ("private", MountFlag::Private { recursive: false }),
        ("rprivate", MountFlag::Private { recursive: true }),
        ("slave", MountFlag::Slave { recursive: false }),
        ("rslave", MountFlag::Slave { recursive: true }),
        ("unbindable", MountFlag::Unbindable { recursive: false }),
        ("runbindable", MountFlag::Unbindable { recursive: true }),
    ];

    fn parse(text: &str) -> Option<MountFlag> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, f)| *f)
    }

    fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(name, _)| *name)
            .unwrap_or_default()
    }
}

/// A bind mount as written, `SRC[:DST[:FLAGS]]` (FLAGS: `ro`, `rw` and
/// [`MountFlag`]s joined by `+`), checked without looking at any file: the
/// one parser of that syntax (within [`MountRequest`]), for `berth run
/// --mount`, the SPANK plugin's srun-time check of `--container-mounts` and
/// the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The source as written (relative: from the caller's directory).
    pub source: String,
    /// Where it goes in the container: absolute, no `..`, not `/`.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
    /// The other flags, as given.
    pub flags: Vec<MountFlag>,
}

/// One `--container-mounts` (or `berth run --mount`) item, as pyxis
/// writes them: a bind mount, `tmpfs:DST[:OPTIONS]` (a new tmpfs, options
/// joined by `+`: `size=`, `mode=`, `nr_inodes=`, `huge=`), or `umount:DST`
/// (no mount at DST of those the container would get, e.g. the home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRequest {
    /// A host path bound in.
    Bind(MountSpec),
    /// A new tmpfs.
    Tmpfs(TmpfsSpec),
    /// The destination of a mount to leave out.
    Unmount(PathBuf),
}

/// `tmpfs:DST[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsSpec {
    /// Where it goes in the container.
    pub destination: PathBuf,
    /// `key=value` tmpfs options (only those listed in [`MountRequest`]).
    pub options: Vec<String>,
}

/// The tmpfs options a user may give (the rest, e.g. `uid=`, are berth's).
const TMPFS_OPTIONS: [&str; 4] = ["size", "mode", "nr_inodes", "huge"];

/// A destination as a user may give it: absolute, no `..`, not `/`.
fn destination(dst: &str, syntax: &dyn Fn(&str) -> MountError) -> Result<PathBuf, MountError> {
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
    Ok(dst.to_path_buf())
}

impl MountRequest {
    /// Parses one item.
    pub fn parse(spec: &str) -> Result<MountRequest, MountError> {
        let syntax = |why: &str| MountError::Syntax {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        if let Some(rest) = spec.strip_prefix("umount:") {
            return Ok(MountRequest::Unmount(destination(rest, &syntax)?));
        }
        if let Some(rest) = spec.strip_prefix("tmpfs:") {
            let (dst, options) = rest.split_once(':').unwrap_or((rest, ""));
            let options: Vec<String> = options
                .split('+')
                .filter(|o| !o.is_empty())
                .map(|o| match o.split_once('=') {
                    // `size=0` and `nr_inodes=0` would mean no limit.
                    Some(("size" | "nr_inodes", value))
                        if value.trim_start_matches('0').is_empty() =>
                    {
                        Err(syntax(&format!(
                            "tmpfs option {o:?}: 0 means no limit; give a size"
                        )))
                    }
                    Some((key, value))
                        if TMPFS_OPTIONS.contains(&key)
                            && !value.is_empty()
                            && value
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"_%".contains(&b)) =>
                    {
                        Ok(o.to_string())
                    }
                    _ => Err(syntax(&format!(
                        "tmpfs option {o:?}: expected {}=VALUE",
                        TMPFS_OPTIONS.join("=, ")
                    ))),
                })
                .collect::<Result<_, _>>()?;
            return Ok(MountRequest::Tmpfs(TmpfsSpec {
                destination: destination(dst, &syntax)?,
                options,
            }));
        }
        MountSpec::parse(spec).map(MountRequest::Bind)
    }

    /// Where it is (or would have been) in the container.
    pub fn destination(&self) -> &Path {
        match self {
            MountRequest::Bind(m) => &m.destination,
            MountRequest::Tmpfs(t) => &t.destination,
            MountRequest::Unmount(d) => d,
        }
    }
}

impl std::fmt::Display for MountRequest {
    /// As `parse` reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountRequest::Bind(m) => m.fmt(f),
            MountRequest::Tmpfs(t) => {
                write!(f, "tmpfs:{}", t.destination.display())?;
                if !t.options.is_empty() {
                    write!(f, ":{}", t.options.join("+"))?;
                }
                Ok(())
            }
            MountRequest::Unmount(d) => write!(f, "umount:{}", d.display()),
        }
    }
}

impl MountSpec {
    /// Parses one bind mount, `SRC[:DST[:FLAGS]]` (`SRC` alone: the same
    /// path inside).
    pub fn parse(spec: &str) -> Result<MountSpec, MountError> {
        let syntax = |why: &str| MountError::Syntax {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, flags) = match parts.as_slice() {
            [src] => (*src, *src, ""),
            [src, dst] => (*src, *dst, ""),
            [src, dst, flags] => (*src, *dst, *flags),
            _ => return Err(syntax("too many ':' separated fields")),
        };
        if src.is_empty() {
            return Err(syntax("empty source"));
        }
        let (mut read_only, mut others) = (None, Vec::new());
        for flag in flags.split('+').filter(|f| !f.is_empty()) {
            match (flag, read_only) {
                ("ro", None | Some(true)) => read_only = Some(true),
                ("rw", None | Some(false)) => read_only = Some(false),
                ("ro" | "rw", _) => return Err(syntax("both ro and rw")),
                _ => match MountFlag::parse(flag) {
                    Some(f) if !others.contains(&f) => others.push(f),
                    Some(_) => {}
                    None => {
                        return Err(syntax(&format!(
                            "unknown flag {flag:?} (known: ro, rw, {})",
                            MountFlag::ALL.map(|(n, _)| n).join(", ")
                        )))
                    }
                },
            }
        }
        Ok(MountSpec {
            source: src.to_string(),
            destination: destination(dst, &syntax)?,
            read_only: read_only.unwrap_or(false),
            flags: others,
        })
    }

    /// Whether nothing on it may be executed.
    pub fn no_exec(&self) -> bool {
        self.flags.contains(&MountFlag::NoExec)
    }

    /// The propagation asked for (the last one given), if not the default.
    pub fn propagation(&self) -> Option<MountFlag> {
        self.flags.iter().rev().copied().find(|f| {
            matches!(
                f,
                MountFlag::Private { .. } | MountFlag::Slave { .. } | MountFlag::Unbindable { .. }
            )
        })
    }
}

impl std::fmt::Display for MountSpec {
    /// `SRC:DST[:FLAGS]`, as `parse` reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.destination.display())?;
        let mut flags: Vec<&str> = self.read_only.then_some("ro").into_iter().collect();
        flags.extend(self.flags.iter().map(|f| f.as_str()));
        if !flags.is_empty() {
            write!(f, ":{}", flags.join("+"))?;
        }
        Ok(())
    }
}

/// A bind mount's host source, as a [`BindMount`]: relative sources are
/// taken from `cwd`.
pub fn bind_mount(spec: &MountSpec, cwd: &Path) -> Result<BindMount, MountError> {
    let source = cwd.join(&spec.source);
    let source = source
        .canonicalize()
        .map_err(|_| MountError::Missing(source.clone()))?;
    Ok(BindMount {
        source,
        destination: spec.destination.clone(),
        read_only: spec.read_only,
        no_exec: spec.no_exec(),
        propagation: spec.propagation(),
        tree: None,
    })
}

/// Parses one bind-mount `--mount` value. Relative sources are taken from `cwd`.
pub fn parse_mount(spec: &str, cwd: &Path) -> Result<BindMount, MountError> {
    bind_mount(&MountSpec::parse(spec)?, cwd)
}

/// Whether a character device (major, minor) is one every container's /dev
/// already holds and its device filter lets through (null, zero, full,
/// random, urandom): such a node may be a mount source (pyxis's
/// `/dev/null:/null`). Any other device, and every directory under /dev,
/// stays refused: a GPU's node open to all must not reach a job not given it.
pub fn is_harmless_device(major: u64, minor: u64) -> bool {
    major == 1 && [3, 5, 7, 8, 9].contains(&minor)
}

/// Whether `path` is one of the [`is_harmless_device`] nodes.
fn harmless_device_at(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::metadata(path).is_ok_and(|m| {
        m.file_type().is_char_device()
            && is_harmless_device(
                nix::sys::stat::major(m.rdev()),
                nix::sys::stat::minor(m.rdev()),
            )
    })
}

/// Checks a (canonical) source against the admin's prefixes.
pub fn check_policy(mount: &BindMount, policy: &MountsConfig) -> Result<(), MountError> {
    if harmless_device_at(&mount.source) {
        return Ok(());
    }
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
            no_exec: false,
            propagation: None,
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
        // pyxis's forms: SRC alone, flags joined by '+', spaces.
        let short = MountSpec::parse("/var/lib").unwrap();
        assert_eq!(short.destination, PathBuf::from("/var/lib"));
        let flagged = parse_mount("/tmp:/mnt:unbindable+ro+noexec+nosuid", cwd).unwrap();
        assert!(flagged.read_only && flagged.no_exec);
        assert_eq!(
            flagged.propagation,
            Some(MountFlag::Unbindable { recursive: false })
        );
        for written in [
            "rel/src:/data:ro",
            "/a:/b",
            "/a b:/c d:ro+rslave",
            "tmpfs:/scratch",
            "tmpfs:/scratch:size=1g+huge=within_size",
            "umount:/root",
        ] {
            assert_eq!(MountRequest::parse(written).unwrap().to_string(), written);
        }
        for bad in [
            "/tmp:data",
            "/tmp:/a:rx",
            "/tmp:/a:ro+rw",
            "/tmp:/a/../b",
            ":/a",
            "/tmp:/",
            "a:b:c:d",
            "rel",
            "tmpfs:rel",
            "tmpfs:/t:uid=0",
            "tmpfs:/t:size=1g,mode=777",
            "tmpfs:/t:size=0",
            "tmpfs:/t:nr_inodes=00",
            "umount:../x",
        ] {
            assert!(
                matches!(MountRequest::parse(bad), Err(MountError::Syntax { .. })),
                "{bad}"
            );
        }
        let missing = parse_mount("/no/such/dir:/a", cwd).unwrap_err();
        assert_eq!(missing, MountError::Missing(PathBuf::from("/no/such/dir")));
        assert!(missing.to_string().contains("source path does not exist"));
    }

    #[test]
    fn policy_prefixes() {
        let policy = MountsConfig::default();
        let m = |s: &str| BindMount {
            source: PathBuf::from(s),
            destination: PathBuf::from("/x"),
            read_only: false,
            no_exec: false,
            propagation: None,
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
