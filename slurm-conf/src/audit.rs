//! `[audit]`: where container starts and ends are recorded.

use std::path::PathBuf;

use serde::Deserialize;

/// `[audit]`: one structured line per container start (or failed start)
/// and end, for `berth run`, Slurm steps and logins.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// To syslog (journald), facility authpriv, as `berth-audit: {json}`.
    pub syslog: bool,
    /// Also appended to this JSON-lines file (root's, mode 0600; a file
    /// another user owns or may write is refused), by root only.
    pub file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            syslog: true,
            file: None,
        }
    }
}
