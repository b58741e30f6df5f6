//! The user's bind mounts (`-m`, `--container-mounts`): parsed, checked
//! against berth.toml's policy, and, when root acts for a user, opened
//! with that user's rights and taken as a detached tree of what was opened.

use std::path::{Path, PathBuf};

use crate::as_user::{FileKind, UserPathError, UserRights};
use crate::mounts::{check_policy, parse_mount, MountError};

use super::{BindMount, Identity, SourceTree, SpecError};

/// The host paths `texts` (`SRC:DST[:OPTIONS]`) ask to bind, checked
/// against berth.toml's mount policy and readable by the container's user.
pub fn user_mounts(
    config: &slurm_conf::Config,
    texts: &[String],
    identity: &Identity,
) -> Result<Vec<BindMount>, SpecError> {
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
    let mut mounts = Vec::new();
    for text in texts {
        let mut mount = match &rights {
            Some(user) => user
                .with(|| parse_mount(text, &cwd))
                .map_err(SpecError::host("cannot take the user's rights"))??,
            None => parse_mount(text, &cwd)?,
        };
        check_policy(&mount, &config.mounts)?;
        match &rights {
            Some(user) => {
                let (tree, opened_at) = source_tree(&mount.source, user)?;
                // The policy holds for what was opened, wherever the path
                // led by then (a component swapped after the first check).
                mount.source = opened_at;
                check_policy(&mount, &config.mounts)?;
                mount.tree = Some(tree);
            }
            None => check_user_can_read(&mount.source, identity)?,
        }
        mounts.push(mount);
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
    let is_dir = match crate::as_user::file_kind(opened.as_fd())
        .map_err(SpecError::host(format!("cannot read mount source {shown}")))?
    {
        FileKind::Dir => true,
        FileKind::File => false,
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
    crate::sys::make_tree_private(tree.as_fd()).map_err(SpecError::host(format!(
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
