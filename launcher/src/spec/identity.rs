//! Who the container runs as: the caller; root may name a user with
//! `--user`, and a root caller honours the image's `User`. The name
//! service is asked only when another user's groups are needed.

use crate::image::ResolvedImage;

use super::{Identity, SpecError};

fn parse_ids(text: &str) -> Result<(u32, Option<u32>), SpecError> {
    let bad = || SpecError::Invalid(format!("--user {text:?}: expected UID[:GID] as numbers"));
    let mut parts = text.splitn(2, ':');
    let uid = parts.next().unwrap_or("").parse().map_err(|_| bad())?;
    let gid = parts
        .next()
        .map(str::parse)
        .transpose()
        .map_err(|_| bad())?;
    Ok((uid, gid))
}

/// The identity `--user` asks for (root only), or None without it.
pub fn asked_identity(
    user: Option<&str>,
    remap_root: bool,
    privileged: bool,
) -> Result<Option<Identity>, SpecError> {
    match (user, privileged) {
        (Some(user), true) => user_identity(user, remap_root).map(Some),
        (Some(_), false) => Err(SpecError::Invalid(
            "--user: only root may choose the user a container runs as".into(),
        )),
        (None, _) => Ok(None),
    }
}

/// The identity of `--user UID[:GID]` for root acting for that user.
pub fn user_identity(user: &str, remap_root: bool) -> Result<Identity, SpecError> {
    let (uid, gid) = parse_ids(user)?;
    Ok(host_identity(uid, gid, remap_root, true))
}

/// Without `--user`: the caller, or for a root caller the image's User.
pub fn identity(
    image: &ResolvedImage,
    remap_root: bool,
    privileged: bool,
) -> Result<Identity, SpecError> {
    let (uid, gid) = match (privileged, &image.config.user) {
        (true, Some(user)) if !user.is_empty() => image_user(user, image)?,
        (true, _) => (0, Some(0)),
        (false, _) => (
            nix::unistd::getuid().as_raw(),
            Some(nix::unistd::getgid().as_raw()),
        ),
    };
    Ok(host_identity(uid, gid, remap_root, privileged))
}

/// Completes a host identity: the gid from the name service when not given,
/// and the supplementary groups (kept only when berth runs as root).
fn host_identity(uid: u32, gid: Option<u32>, remap_root: bool, privileged: bool) -> Identity {
    // The name service (maybe LDAP) is asked only for another user's group
    // list; it costs more than the rest of start-up together.
    let (gid, host_groups) = if !privileged {
        (gid.unwrap_or(uid), vec![])
    } else if uid == 0 && gid.is_none_or(|g| g == 0) {
        let groups = nix::unistd::getgroups().unwrap_or_default();
        (0, groups.iter().map(|g| g.as_raw()).collect())
    } else {
        let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let gid = gid.or(user.as_ref().map(|u| u.gid.as_raw())).unwrap_or(uid);
        (gid, supplementary_groups(uid, gid))
    };
    Identity {
        host_uid: uid,
        host_gid: gid,
        host_groups,
        remap_root,
        privileged,
    }
}

/// Resolves an image's `User` (numeric or a name in the image's /etc/passwd).
fn image_user(user: &str, image: &ResolvedImage) -> Result<(u32, Option<u32>), SpecError> {
    let (name, group) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let passwd = image
        .layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())
        .unwrap_or_default();
    let uid = name.parse().ok().or_else(|| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == name)
            .and_then(|f| f[2].parse().ok())
    });
    let Some(uid) = uid else {
        return Err(SpecError::Invalid(format!(
            "the image's User {user:?} is not in its /etc/passwd"
        )));
    };
    let gid = match group {
        Some(g) => Some(g.parse().map_err(|_| {
            SpecError::Invalid(format!("the image's User {user:?}: group must be numeric"))
        })?),
        None => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].parse() == Ok(uid))
            .and_then(|f| f[3].parse().ok()),
    };
    Ok((uid, gid))
}

/// A host user's supplementary groups, from the name service.
pub fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Some(user) = nix::unistd::User::from_uid(uid.into()).ok().flatten() else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name.as_str()) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&name, gid.into())
        .map(|g| g.iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
}
