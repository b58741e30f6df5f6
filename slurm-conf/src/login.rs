//! `[login]`: the shared server's per-user containers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[login]`: on a shared server, the container each listed user has (the
/// seeds' setup): its image, working directory and mounts, whose sources
/// are templates (`{user}`, `{uid}`, `{group}`). `berth verify` checks each
/// listed user's container.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// The image of every user's container ("" when unused).
    pub image: String,
    /// Where a session starts.
    pub workdir: String,
    /// The users who have a container: names, and `@GROUP` for a group's
    /// members.
    pub users: Vec<String>,
    /// Bind mounts, in order.
    pub mounts: Vec<LoginMount>,
    /// The socket `berth login` reaches the root service `berth
    /// login-service` on.
    pub socket: PathBuf,
    /// How long a user's container keeps running after their last session
    /// ended ("10m", "1h", "30s"; "0": it stops with the last session).
    pub idle_stop: String,
    /// Sessions are root in a user namespace of their own, mapped to the
    /// user (as `--container-remap-root`): they can install packages,
    /// which stay in the container's writable layer.
    pub remap_root: bool,
    /// The session's shell in the container (the first of these that the
    /// image has): it runs `-c COMMAND` for `ssh host COMMAND`.
    pub shells: Vec<String>,
    /// Slurm's client works in the container: the munge socket's
    /// directory and Slurm's configuration directory are bound in
    /// read-only (the image brings srun, sbatch, squeue).
    pub slurm: bool,
    /// `[login.user.NAME]`: what differs for one user.
    pub user: BTreeMap<String, LoginOverride>,
    /// `[login.group.NAME]`: what differs for a group's members (a user's
    /// own entry wins; groups apply in name order).
    pub group: BTreeMap<String, LoginOverride>,
}

/// What differs for a user or a group's members.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LoginOverride {
    /// Another image.
    pub image: Option<String>,
    /// Another working directory.
    pub workdir: Option<String>,
    /// Sessions root of a user namespace of their own, or not.
    pub remap_root: Option<bool>,
    /// Mounts added after `[[login.mounts]]`.
    pub mounts: Vec<LoginMount>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            image: String::new(),
            workdir: "/workspace".into(),
            users: vec![],
            mounts: vec![],
            socket: "/run/berth/login.sock".into(),
            idle_stop: "10m".into(),
            remap_root: false,
            shells: vec!["/bin/bash".into(), "/bin/sh".into()],
            slurm: false,
            user: BTreeMap::new(),
            group: BTreeMap::new(),
        }
    }
}

/// One `[[login.mounts]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoginMount {
    /// The host directory, a template: `/data1/org/{user}_data`.
    pub source: String,
    /// Where it is in the container.
    pub destination: PathBuf,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
    /// The source must be the user's own directory.
    #[serde(default)]
    pub owned_by_user: bool,
    /// The source must have exactly this mode, e.g. "0700".
    #[serde(default)]
    pub mode: Option<String>,
}
