//! `[login]`: the shared server's per-user containers.

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
    /// The users who have a container.
    pub users: Vec<String>,
    /// Bind mounts, in order.
    pub mounts: Vec<LoginMount>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            image: String::new(),
            workdir: "/workspace".into(),
            users: vec![],
            mounts: vec![],
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
