//! `[limits]`: cgroup limits, their defaults and maxima, per user, group
//! and Slurm partition, and their validation.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{parse_size, ConfigError};

/// `[limits]`: what a container may use, written to its cgroup. `default`
/// applies when the user asks for nothing, `max` caps what they may ask for.
/// `[limits.users.NAME]`, `[limits.groups.NAME]` and
/// `[limits.partitions.NAME]` replace them field by field, the user's
/// entry first, then the user's groups (the most generous), then the Slurm
/// partition, then the global values.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Where containers' cgroups go outside Slurm, under the cgroup root
    /// (under Slurm: inside the step's cgroup).
    pub cgroup_parent: String,
    /// Limits a container gets when the user asks for none.
    pub default: LimitValues,
    /// The most a user may ask for.
    pub max: LimitValues,
    /// Per user name.
    pub users: std::collections::BTreeMap<String, LimitTier>,
    /// Per group name.
    pub groups: std::collections::BTreeMap<String, LimitTier>,
    /// Per Slurm partition.
    pub partitions: std::collections::BTreeMap<String, LimitTier>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            cgroup_parent: "berth".to_string(),
            default: LimitValues::default(),
            max: LimitValues::default(),
            users: Default::default(),
            groups: Default::default(),
            partitions: Default::default(),
        }
    }
}

/// Defaults and maxima for one user, group or partition.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitTier {
    /// Limits when the user asks for none.
    pub default: LimitValues,
    /// The most the user may ask for.
    pub max: LimitValues,
}

/// Resource limits; an absent field sets nothing.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitValues {
    /// memory.max, a size like "8G".
    pub memory: Option<String>,
    /// memory.swap.max, a size.
    pub swap: Option<String>,
    /// cpu.max, in CPUs (1.5 = one and a half CPUs' time).
    pub cpus: Option<f64>,
    /// pids.max.
    pub pids: Option<u64>,
    /// io.max read bytes per second, a size per second ("100M").
    pub io_read_bps: Option<String>,
    /// io.max write bytes per second.
    pub io_write_bps: Option<String>,
    /// io.max read operations per second.
    pub io_read_iops: Option<u64>,
    /// io.max write operations per second.
    pub io_write_iops: Option<u64>,
    /// The block devices the io limits apply to (e.g. "/dev/nvme0n1").
    pub io_devices: Option<Vec<PathBuf>>,
}

impl LimitsConfig {
    /// Checks every tier's values; errors name the key.
    pub(crate) fn validate(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let l = self;
        if l.cgroup_parent.is_empty()
            || l.cgroup_parent.starts_with('/')
            || l.cgroup_parent
                .split('/')
                .any(|c| c.is_empty() || c == "..")
        {
            return Err(invalid(
                "limits.cgroup_parent",
                format!(
                    "{:?} is not a relative cgroup path like \"berth\"",
                    l.cgroup_parent
                ),
            ));
        }
        let mut tiers = vec![("limits".to_string(), &l.default, &l.max)];
        for (kind, map) in [
            ("users", &l.users),
            ("groups", &l.groups),
            ("partitions", &l.partitions),
        ] {
            for (name, tier) in map {
                tiers.push((format!("limits.{kind}.{name}"), &tier.default, &tier.max));
            }
        }
        for (prefix, default, max) in tiers {
            for (which, v) in [("default", default), ("max", max)] {
                let key = |field: &str| format!("{prefix}.{which}.{field}");
                for (field, size) in [
                    ("memory", &v.memory),
                    ("swap", &v.swap),
                    ("io_read_bps", &v.io_read_bps),
                    ("io_write_bps", &v.io_write_bps),
                ] {
                    if let Some(size) = size {
                        parse_size(size).map_err(|e| invalid(&key(field), e.to_string()))?;
                    }
                }
                if let Some(cpus) = v.cpus {
                    if !(cpus > 0.0 && cpus <= 65536.0) {
                        return Err(invalid(
                            &key("cpus"),
                            format!("{cpus} is not a number of CPUs above 0"),
                        ));
                    }
                }
                if v.pids == Some(0) {
                    return Err(invalid(
                        &key("pids"),
                        "0 would allow no process at all".into(),
                    ));
                }
                if let Some(p) = v.io_devices.iter().flatten().find(|p| !p.is_absolute()) {
                    return Err(invalid(
                        &key("io_devices"),
                        format!("{p:?} is not an absolute path"),
                    ));
                }
            }
        }
        Ok(())
    }
}
