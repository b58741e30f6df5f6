//! The user's bind mounts (`-m`, `--container-mounts`): parsed, checked
//! against berth.toml's policy, and, when root acts for a user, opened
//! with that user's rights and taken as a detached tree of what was opened.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use berth::spec::Identity;

/// The host paths `texts` (`SRC:DST[:OPTIONS]`) ask to bind, checked
/// against berth.toml's mount policy and readable by the container's user.
pub(crate) fn user_mounts(
    config: &slurm_conf::Config,
    texts: &[String],
    identity: &Identity,
) -> Result<Vec<berth::spec::BindMount>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // Root acting for a user resolves the path with the user's rights and
    // takes the source from what those rights open: a detached clone made
    // now, never the path again.
    let rights =
        (identity.privileged && identity.host_uid != 0).then(|| berth::as_user::UserRights {
            uid: identity.host_uid,
            gid: identity.host_gid,
            groups: identity.host_groups.clone(),
        });
    let mut mounts = Vec::new();
    for text in texts {
        let mut mount = match &rights {
            Some(user) => user.with(|| berth::mounts::parse_mount(text, &cwd))??,
            None => berth::mounts::parse_mount(text, &cwd)?,
        };
        berth::mounts::check_policy(&mount, &config.mounts)?;
        match &rights {
            Some(user) => {
                let (tree, opened_at) = source_tree(&mount.source, user)?;
                // The policy holds for what was opened, wherever the path
                // led by then (a component swapped after the first check).
                mount.source = opened_at;
                berth::mounts::check_policy(&mount, &config.mounts)?;
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
fn source_tree(
    source: &Path,
    user: &berth::as_user::UserRights,
) -> Result<(berth::spec::SourceTree, PathBuf)> {
    use std::os::fd::AsFd;
    // Opened for reading (not O_PATH): the user must be able to read it.
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let opened =
        berth::as_user::open_user_path(Some(user), source, flags).map_err(|e| match e {
            berth::as_user::UserPathError::NotAccessible { .. } => {
                anyhow::Error::from(berth::mounts::MountError::PermissionDenied {
                    path: source.to_path_buf(),
                    uid: user.uid,
                })
            }
            other => other.into(),
        })?;
    let is_dir = match berth::as_user::file_kind(opened.as_fd())? {
        berth::as_user::FileKind::Dir => true,
        berth::as_user::FileKind::File => false,
        berth::as_user::FileKind::Other(what) => bail!(
            "mount source {} is {what}: only files and directories may be mounted",
            source.display()
        ),
    };
    let opened_at = berth::as_user::opened_at(opened.as_fd())
        .with_context(|| format!("cannot tell where mount source {} is", source.display()))?;
    let tree = berth::sys::open_tree_clone_fd(opened.as_fd(), true)
        .with_context(|| format!("cannot clone mount source {}", source.display()))?;
    berth::sys::make_tree_private(tree.as_fd())
        .with_context(|| format!("cannot make mount source {} private", source.display()))?;
    Ok((
        berth::spec::SourceTree {
            fd: std::sync::Arc::new(tree),
            is_dir,
        },
        opened_at,
    ))
}

/// Checks that a mount source is readable by the caller itself (rootless
/// berth; root for itself may read anything). Root acting for a user opens
/// the source with the user's rights instead ([`source_tree`]).
fn check_user_can_read(path: &Path, id: &Identity) -> Result<()> {
    use nix::unistd::AccessFlags;
    if id.privileged || nix::unistd::access(path, AccessFlags::R_OK).is_ok() {
        return Ok(());
    }
    Err(berth::mounts::MountError::PermissionDenied {
        path: path.to_path_buf(),
        uid: id.host_uid,
    }
    .into())
}
