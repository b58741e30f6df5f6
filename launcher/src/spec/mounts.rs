//! The user's mounts (`-m`, `--container-mounts`): parsed, bind sources
//! checked against berth.toml's policy and, when root acts for a user,
//! opened with that user's rights and taken as a detached tree of what was
//! opened; tmpfs mounts; `umount:` items applied.

use std::path::{Path, PathBuf};

use crate::as_user::{FileKind, UserPathError, UserRights};
use crate::mounts::{bind_mount, check_policy, MountError, MountRequest};

use super::{BindMount, Identity, SourceTree, SpecError, TmpfsMount};

/// The most tmpfs mounts one container may ask for.
const MAX_TMPFS_MOUNTS: usize = 16;

/// The user's mounts: host paths bound in and new tmpfs mounts.
#[derive(Debug, Default)]
pub struct UserMounts {
    /// Bind mounts of host paths.
    pub binds: Vec<BindMount>,
    /// New tmpfs mounts.
    pub tmpfs: Vec<TmpfsMount>,
}

/// The mounts `texts` ask for (pyxis's `--container-mounts` items: see
/// `mounts::MountRequest`): host paths checked against berth.toml's mount
/// policy and readable by the container's user, tmpfs mounts, and
/// `umount:DST`, which leaves out every other item at DST (e.g. the home
/// the plugin adds for `--container-mount-home`).
pub fn user_mounts(
    config: &slurm_conf::Config,
    texts: &[String],
    identity: &Identity,
) -> Result<UserMounts, SpecError> {
    mounts_under(config, &config.mounts, texts, identity)
}

/// Slurm's own mounts for a step, same syntax (the batch script, the PMIx
/// server's directory: paths the plugin takes from Slurm, not the user):
/// opened with the user's rights like theirs, allowed wherever berth.toml's
/// denied paths do not reach (its allowed prefixes are for what users ask).
pub fn slurm_mounts(
    config: &slurm_conf::Config,
    texts: &[String],
    identity: &Identity,
) -> Result<UserMounts, SpecError> {
    let policy = slurm_conf::MountsConfig {
        allowed_prefixes: vec![PathBuf::from("/")],
        denied_prefixes: config.mounts.denied_prefixes.clone(),
    };
    mounts_under(config, &policy, texts, identity)
}

/// `user_mounts` under the mount policy `policy`.
fn mounts_under(
    config: &slurm_conf::Config,
    policy: &slurm_conf::MountsConfig,
    texts: &[String],
    identity: &Identity,
) -> Result<UserMounts, SpecError> {
    let requests = texts
        .iter()
        .map(|t| MountRequest::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let left_out: Vec<&Path> = requests
        .iter()
        .filter_map(|r| match r {
            MountRequest::Unmount(dst) => Some(dst.as_path()),
            _ => None,
        })
        .collect();
    let cwd =
        std::env::current_dir().map_err(SpecError::host("cannot read the current directory"))?;
    // Root acting for a user resolves the path with the user's rights and
    // takes the source from what those rights open: a detached clone made
    // now, never the path again.
    let rights = (identity.privileged && identity.host_uid != 0).then(|| UserRights {
        uid: identity.host_uid,
        gid: identity.host_gid,
        groups: identity.host_groups.clone(),
    });
    let mut mounts = UserMounts::default();
    for request in requests
        .iter()
        .filter(|r| !left_out.contains(&r.destination()))
    {
        let spec = match request {
            MountRequest::Bind(spec) => spec,
            MountRequest::Tmpfs(t) => {
                if mounts.tmpfs.len() == MAX_TMPFS_MOUNTS {
                    return Err(SpecError::Invalid(format!(
                        "at most {MAX_TMPFS_MOUNTS} tmpfs mounts may be asked for"
                    )));
                }
                // Without a size: the writable layer's (never the kernel's
                // half of the node's memory).
                let mut options = t.options.clone();
                if !options.iter().any(|o| o.starts_with("size=")) {
                    options.push(format!("size={}", config.container.upper_size));
                }
                mounts.tmpfs.push(TmpfsMount {
                    destination: t.destination.clone(),
                    options,
                });
                continue;
            }
            MountRequest::Unmount(_) => continue,
        };
        let mut mount = match &rights {
            Some(user) => user
                .with(|| bind_mount(spec, &cwd))
                .map_err(SpecError::host("cannot take the user's rights"))??,
            None => bind_mount(spec, &cwd)?,
        };
        check_policy(&mount, policy)?;
        match &rights {
            Some(user) => {
                let (tree, opened_at) = source_tree(&mount.source, user)?;
                // The policy holds for what was opened, wherever the path
                // led by then (a component swapped after the first check).
                mount.source = opened_at;
                check_policy(&mount, policy)?;
                mount.tree = Some(tree);
            }
            None => check_user_can_read(&mount.source, identity)?,
        }
        mounts.binds.push(mount);
    }
    Ok(mounts)
}

/// A mount source opened with the user's rights, as a private detached
/// tree, and where the opened object is.
fn source_tree(source: &Path, user: &UserRights) -> Result<(SourceTree, PathBuf), SpecError> {
    use std::os::fd::AsFd;
    // Opened for reading (not O_PATH): the user must be able to read it.
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let opened =
        crate::as_user::open_user_path(Some(user), source, flags).map_err(|e| match e {
            UserPathError::NotAccessible { .. } => SpecError::Mount(MountError::PermissionDenied {
                path: source.to_path_buf(),
                uid: user.uid,
            }),
            other => other.into(),
        })?;
    let shown = source.display();
    let device = harmless_device(opened.as_fd());
    let is_dir = match crate::as_user::file_kind(opened.as_fd())
        .map_err(SpecError::host(format!("cannot read mount source {shown}")))?
    {
        FileKind::Dir => true,
        FileKind::File => false,
        FileKind::Other(_) if device => false,
        FileKind::Other(what) => {
            return Err(SpecError::Invalid(format!(
                "mount source {shown} is {what}: only files and directories may be mounted"
            )))
        }
    };
    let opened_at = crate::as_user::opened_at(opened.as_fd()).map_err(SpecError::host(format!(
        "cannot tell where mount source {shown} is"
    )))?;
    let tree = crate::sys::open_tree_clone_fd(opened.as_fd(), true).map_err(SpecError::host(
        format!("cannot clone mount source {shown}"),
    ))?;
    match device {
        true => crate::sys::make_device_tree_private(tree.as_fd()),
        false => crate::sys::make_tree_private(tree.as_fd()),
    }
    .map_err(SpecError::host(format!(
        "cannot make mount source {shown} private"
    )))?;
    Ok((
        SourceTree {
            fd: std::sync::Arc::new(tree),
            is_dir,
        },
        opened_at,
    ))
}

/// Whether what `fd` is open on is a harmless device node (what was
/// opened decides, not the path).
fn harmless_device(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && crate::mounts::is_harmless_device(
                nix::sys::stat::major(st.st_rdev),
                nix::sys::stat::minor(st.st_rdev),
            )
    })
}

/// Checks that a mount source is readable by the caller itself (rootless
/// berth; root for itself may read anything). Root acting for a user opens
/// the source with the user's rights instead ([`source_tree`]).
fn check_user_can_read(path: &Path, id: &Identity) -> Result<(), SpecError> {
    use nix::unistd::AccessFlags;
    if id.privileged || nix::unistd::access(path, AccessFlags::R_OK).is_ok() {
        return Ok(());
    }
    Err(MountError::PermissionDenied {
        path: path.to_path_buf(),
        uid: id.host_uid,
    }
    .into())
}
