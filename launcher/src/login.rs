//! The shared server's per-user containers (`[login]`): which users have
//! one and what each one's mounts are, from berth.toml's templates
//! (`{user}`, `{uid}`, `{group}`), each source checked as configured
//! before it is used: there, a directory, the user's own and with the
//! mode asked for (the seeds' 0700 data directory).

use std::os::unix::fs::MetadataExt;

use nix::unistd::{Group, User};
use slurm_conf::LoginConfig;

/// A `[login]` mount that cannot be used for a user.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoginError {
    /// A listed user the host does not know.
    #[error("[login] users: no user {0:?} on this host")]
    NoSuchUser(String),
    /// A mount's source is not as configured.
    #[error("[login] mount {path} for {user}: {why}")]
    Source {
        /// The expanded source.
        path: String,
        /// Whose.
        user: String,
        /// What is wrong, and what to do.
        why: String,
    },
}

/// The users `[login]` lists.
pub fn users(config: &LoginConfig) -> Result<Vec<User>, LoginError> {
    config
        .users
        .iter()
        .map(|name| {
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| LoginError::NoSuchUser(name.clone()))
        })
        .collect()
}

/// `template` for `user`.
pub fn expand(template: &str, user: &User) -> String {
    let group = Group::from_gid(user.gid)
        .ok()
        .flatten()
        .map_or_else(|| user.gid.to_string(), |g| g.name);
    template
        .replace("{user}", &user.name)
        .replace("{uid}", &user.uid.to_string())
        .replace("{group}", &group)
}

/// `user`'s mounts, `SRC:DST[:ro]`, each source checked as configured.
pub fn mounts(config: &LoginConfig, user: &User) -> Result<Vec<String>, LoginError> {
    config
        .mounts
        .iter()
        .map(|mount| {
            let source = expand(&mount.source, user);
            let refuse = |why: String| LoginError::Source {
                path: source.clone(),
                user: user.name.clone(),
                why,
            };
            let meta = std::fs::symlink_metadata(&source).map_err(|e| {
                refuse(format!("{e}: create it as a directory of {}'s", user.name))
            })?;
            if !meta.is_dir() {
                return Err(refuse("must be a directory (not a symlink or a file)".into()));
            }
            if mount.owned_by_user && meta.uid() != user.uid.as_raw() {
                return Err(refuse(format!(
                    "must be {}'s own (its owner is uid {}): chown it",
                    user.name,
                    meta.uid()
                )));
            }
            if let Some(mode) = mount.mode.as_deref() {
                let wanted = u32::from_str_radix(mode, 8).unwrap_or(0o700);
                let actual = meta.mode() & 0o7777;
                if actual != wanted {
                    return Err(refuse(format!(
                        "must have mode {wanted:04o} (it has {actual:04o}): chmod {wanted:o} {source}"
                    )));
                }
            }
            let ro = if mount.read_only { ":ro" } else { "" };
            Ok(format!("{source}:{}{ro}", mount.destination.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurm_conf::LoginMount;
    use std::os::unix::fs::PermissionsExt;

    fn mount(source: &str, mode: Option<&str>) -> LoginMount {
        LoginMount {
            source: source.into(),
            destination: "/workspace/data".into(),
            read_only: false,
            owned_by_user: true,
            mode: mode.map(String::from),
        }
    }

    #[test]
    fn templates_name_the_user() {
        let root = User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .unwrap();
        assert_eq!(
            expand("/d/{user}_data/{uid}/{group}", &root),
            "/d/root_data/0/root"
        );
    }

    #[test]
    fn a_source_is_checked_as_configured() {
        let root = User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("root_data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let template = format!("{}/{{user}}_data", dir.path().display());
        let config = |mode| LoginConfig {
            mounts: vec![mount(&template, mode)],
            ..Default::default()
        };
        assert_eq!(
            mounts(&config(Some("0700")), &root).unwrap(),
            [format!("{}:/workspace/data", data.display())]
        );
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let why = mounts(&config(Some("0700")), &root)
            .unwrap_err()
            .to_string();
        assert!(why.contains("must have mode 0700 (it has 0755)"), "{why}");
        std::fs::remove_dir(&data).unwrap();
        let why = mounts(&config(None), &root).unwrap_err().to_string();
        assert!(
            why.contains("No such file or directory") && why.contains("create it"),
            "{why}"
        );
        std::os::unix::fs::symlink("/tmp", &data).unwrap();
        let why = mounts(&config(None), &root).unwrap_err().to_string();
        assert!(why.contains("must be a directory"), "{why}");
    }
}
