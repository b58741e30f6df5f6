//! The shared server's per-user containers (`[login]`): which users have
//! one and what each one's mounts are, from berth.toml's templates
//! (`{user}`, `{uid}`, `{group}`), each source checked as configured
//! before it is used: there, a directory, the user's own and with the
//! mode asked for (the seeds' 0700 data directory). The SSH entry point
//! (`berth login`, served by the root `berth login-service`) is built from
//! [`container`] (the kept container each user has), [`session`] (a
//! session's process in it) and [`wire`] (what the two sides say).

use std::os::unix::fs::MetadataExt;

use nix::unistd::{Group, User};
use slurm_conf::{LoginConfig, LoginMount};

use crate::spec::build::{ContainerRequest, Purpose};

pub mod container;
pub mod session;
pub mod wire;

/// A `[login]` mount that cannot be used for a user.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoginError {
    /// A listed user the host does not know.
    #[error("[login] users: no user {0:?} on this host")]
    NoSuchUser(String),
    /// A user who has no container here.
    #[error("{0} has no container on this host (berth.toml [login] users does not list them): ask the admins")]
    NotListed(String),
    /// No image is configured for a listed user.
    #[error("no image for {0}'s container: set [login] image (or [login.user.NAME] / [login.group.NAME] image)")]
    NoImage(String),
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

/// The users `[login]` lists: those named, and the members of each
/// `@GROUP` the group file names (a user whose primary group it is, and
/// no more, logs in all the same but is not enumerated here).
pub fn users(config: &LoginConfig) -> Result<Vec<User>, LoginError> {
    let mut users: Vec<User> = vec![];
    for entry in &config.users {
        let names = match entry.strip_prefix('@') {
            Some(group) => {
                Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(|| LoginError::NoSuchUser(entry.clone()))?
                    .mem
            }
            None => vec![entry.clone()],
        };
        for name in names {
            let user = User::from_name(&name)
                .ok()
                .flatten()
                .ok_or_else(|| LoginError::NoSuchUser(name.clone()))?;
            if !users.iter().any(|u| u.uid == user.uid) {
                users.push(user);
            }
        }
    }
    Ok(users)
}

/// The names of `user`'s groups (primary and supplementary).
fn group_names(user: &User) -> Vec<String> {
    let name = std::ffi::CString::new(user.name.as_str()).unwrap_or_default();
    nix::unistd::getgrouplist(&name, user.gid)
        .unwrap_or_else(|_| vec![user.gid])
        .into_iter()
        .filter_map(|g| Group::from_gid(g).ok().flatten().map(|g| g.name))
        .collect()
}

/// Whether `[login] users` lists `user`, by name or by one of their groups.
pub fn is_listed(config: &LoginConfig, user: &User) -> bool {
    let groups = group_names(user);
    config
        .users
        .iter()
        .any(|entry| match entry.strip_prefix('@') {
            Some(group) => groups.iter().any(|g| g == group),
            None => *entry == user.name,
        })
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
    checked_mounts(&config.mounts, user)
}

/// `mounts` of a list of them.
fn checked_mounts(mounts: &[LoginMount], user: &User) -> Result<Vec<String>, LoginError> {
    mounts
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

/// A login user's container as configured: what it is made of.
#[derive(Debug, Clone)]
pub struct LoginPlan {
    /// Whose.
    pub user: User,
    /// `[login] image`.
    pub image: String,
    /// The admin's mounts (`SRC:DST[:ro]`): the user's templated ones,
    /// checked, then the host's sftp-server and Slurm's client files.
    pub mounts: Vec<String>,
    /// The GPUs `[gpus.users]` grants them (`berth run --gpus`'s list).
    pub gpus: Option<String>,
    /// Where sessions start, and their HOME.
    pub workdir: String,
    /// Sessions are root of a user namespace of their own.
    pub remap_root: bool,
    /// Variables every session gets (`NAME=value`): SLURM_CONF where
    /// Slurm's configuration is not at its default path.
    pub env: Vec<String>,
}

/// The host's sftp-server, bound in for images without their own.
const HOST_SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

impl LoginPlan {
    /// `user`'s container as `config` describes it; refused for a user
    /// `[login] users` does not list, or whose mounts are not as configured.
    pub fn of(config: &slurm_conf::Config, user: &User) -> Result<LoginPlan, LoginError> {
        let login = &config.login;
        if !is_listed(login, user) {
            return Err(LoginError::NotListed(user.name.clone()));
        }
        // [login], then the user's groups' entries, then the user's own.
        let groups = group_names(user);
        let overrides = login
            .group
            .iter()
            .filter(|(name, _)| groups.contains(name))
            .map(|(_, o)| o)
            .chain(login.user.get(&user.name));
        let (mut image, mut workdir, mut remap_root) =
            (login.image.clone(), login.workdir.clone(), login.remap_root);
        let mut configured: Vec<LoginMount> = login.mounts.clone();
        for o in overrides {
            image = o.image.clone().unwrap_or(image);
            workdir = o.workdir.clone().unwrap_or(workdir);
            remap_root = o.remap_root.unwrap_or(remap_root);
            configured.extend(o.mounts.iter().cloned());
        }
        if image.is_empty() {
            return Err(LoginError::NoImage(user.name.clone()));
        }
        let mut mounts = checked_mounts(&configured, user)?;
        let mut env = vec![];
        if std::path::Path::new(HOST_SFTP_SERVER).is_file() {
            mounts.push(format!(
                "{HOST_SFTP_SERVER}:{}:ro",
                session::SFTP_SERVER_IN_CONTAINER
            ));
        }
        if login.slurm {
            let conf = crate::slurm::files::path("slurm.conf");
            let conf_dir = conf
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "/etc/slurm".into());
            mounts.push(format!("{conf_dir}:{conf_dir}:ro"));
            mounts.push("/run/munge:/run/munge:ro".into());
            // srun loads the plugstack's plugins (berth's among them).
            for plugin in crate::slurm::files::spank_plugins(&conf) {
                let plugin = plugin.display();
                mounts.push(format!("{plugin}:{plugin}:ro"));
            }
            if conf != std::path::Path::new("/etc/slurm/slurm.conf") {
                env.push(format!("SLURM_CONF={}", conf.display()));
            }
        }
        Ok(LoginPlan {
            gpus: gpus_of(config, user),
            user: user.clone(),
            image,
            mounts,
            workdir,
            remap_root,
            env,
        })
    }

    /// What the container is asked to be (its mounts are the admin's: see
    /// [`LoginPlan::purpose`]).
    pub fn request(&self) -> ContainerRequest {
        ContainerRequest {
            image: self.image.clone(),
            user: Some(format!("{}:{}", self.user.uid, self.user.gid)),
            gpus: self.gpus.clone(),
            remap_root: self.remap_root,
            ..Default::default()
        }
    }

    /// How it differs from `berth run`'s: kept running without a command,
    /// the host's name, other users' processes hidden, its own cgroup
    /// under `cgroup_parent`, and the admin's mounts, opened with the
    /// user's rights (`[mounts]`'s denied prefixes apply).
    pub fn purpose(&self, cgroup_parent: &str) -> Purpose {
        Purpose {
            needs_command: false,
            default_hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok()),
            proc_hidepid: true,
            // One of its own each start (a container of the same user
            // in another store, or still being removed, has another).
            cgroup_path: Some(format!(
                "{cgroup_parent}/{}-{}-{}",
                container::CONTAINER_NAME,
                self.user.uid,
                std::process::id()
            )),
            slurm_mounts: self.mounts.clone(),
            ..Default::default()
        }
    }

    /// The user's supplementary groups on the host.
    pub fn groups(&self) -> Vec<u32> {
        let name = std::ffi::CString::new(self.user.name.as_str()).unwrap_or_default();
        nix::unistd::getgrouplist(&name, self.user.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![self.user.gid.as_raw()])
    }
}

/// The GPUs `[gpus.users]` grants `user`, as a `--gpus` list.
pub fn gpus_of(config: &slurm_conf::Config, user: &User) -> Option<String> {
    config
        .gpus
        .users
        .get(&user.name)
        .filter(|g| !g.is_empty())
        .map(|g| g.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
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
    fn groups_list_users_and_overrides_apply_user_last() {
        let root = User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .unwrap();
        let text = r#"
            [login]
            image = "base"
            users = ["@root"]
            [login.group.root]
            image = "for-the-group"
            workdir = "/group"
            [login.user.root]
            workdir = "/mine"
            remap_root = true
        "#;
        let config = slurm_conf::Config::parse(text, std::path::Path::new("t")).unwrap();
        assert!(is_listed(&config.login, &root));
        let plan = LoginPlan::of(&config, &root).unwrap();
        assert_eq!(
            (plan.image.as_str(), plan.workdir.as_str(), plan.remap_root),
            ("for-the-group", "/mine", true)
        );
        let unlisted = slurm_conf::Config::parse(
            "[login]\nimage = \"x\"\nusers = [\"@nogroup-berth\"]\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        assert!(!is_listed(&unlisted.login, &root));
        assert!(matches!(
            LoginPlan::of(&unlisted, &root),
            Err(LoginError::NotListed(_))
        ));
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
