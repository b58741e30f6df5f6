//! Resource limits: what berth.toml's `[limits]` and the user's asks resolve
//! to ([`resolve`]), and the container's cgroup that enforces them
//! ([`cgroup::ContainerCgroup`], with the device filter of
//! [`device_filter`]).

pub mod cgroup;
pub mod device_filter;

use std::path::PathBuf;

use slurm_conf::{parse_size, LimitValues, LimitsConfig};

/// Why limits cannot be resolved or enforced.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The user asked for more than allowed.
    #[error("{option} {asked} is more than berth.toml allows {who} ({allowed}, from [{key}])")]
    AboveMax {
        /// The option (`--memory`).
        option: &'static str,
        /// What was asked, as given.
        asked: String,
        /// Who asked.
        who: String,
        /// The maximum, as configured.
        allowed: String,
        /// The config table the maximum comes from.
        key: String,
    },
    /// A value that does not parse.
    #[error("{option}: {message}")]
    BadValue {
        /// The option or key.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// A cgroup could not be made or written.
    #[error("cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Limits in numbers, ready for a cgroup; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceLimits {
    /// memory.max in bytes.
    pub memory: Option<u64>,
    /// memory.swap.max in bytes.
    pub swap: Option<u64>,
    /// cpu.max in CPUs.
    pub cpus: Option<f64>,
    /// pids.max.
    pub pids: Option<u64>,
    /// io.max per block device.
    pub io: Vec<IoLimit>,
}

impl ResourceLimits {
    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == ResourceLimits::default()
    }
}

/// io.max for one block device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoLimit {
    /// The device file.
    pub device: PathBuf,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Read bytes per second.
    pub read_bps: Option<u64>,
    /// Write bytes per second.
    pub write_bps: Option<u64>,
    /// Read operations per second.
    pub read_iops: Option<u64>,
    /// Write operations per second.
    pub write_iops: Option<u64>,
}

/// What berth says when the kernel's OOM killer struck in a container's
/// cgroup `kills` times; `limit` as the user would write it ("32M").
pub fn out_of_memory(kills: u64, limit: Option<&str>) -> String {
    format!(
        "the container ran out of memory: the kernel killed {kills} process{} at its memory limit{}",
        if kills == 1 { "" } else { "es" },
        limit
            .filter(|l| !l.is_empty())
            .map(|l| format!(" of {l}"))
            .unwrap_or_default()
    )
}

/// Whose limits: the user, their groups, the Slurm partition.
pub struct Who<'a> {
    /// User name.
    pub user: &'a str,
    /// Group names.
    pub groups: &'a [String],
    /// Slurm partition, under Slurm.
    pub partition: Option<&'a str>,
}

/// What the user asked for (the options), in berth.toml's terms;
/// `io_devices` is not the user's to choose and is ignored.
pub type Asked = LimitValues;

/// Whether the user asked for any limit.
pub fn asked_any(asked: &Asked) -> bool {
    let Asked {
        memory,
        swap,
        cpus,
        pids,
        io_read_bps,
        io_write_bps,
        io_read_iops,
        io_write_iops,
        io_devices: _,
    } = asked;
    memory.is_some()
        || swap.is_some()
        || cpus.is_some()
        || pids.is_some()
        || io_read_bps.is_some()
        || io_write_bps.is_some()
        || io_read_iops.is_some()
        || io_write_iops.is_some()
}

/// The tiers that apply to `who`, most specific first: (config key, values).
fn tiers<'a>(config: &'a LimitsConfig, who: &Who, max: bool) -> Vec<(String, &'a LimitValues)> {
    let pick = |t: &'a slurm_conf::LimitTier| if max { &t.max } else { &t.default };
    let which = if max { "max" } else { "default" };
    let mut out = Vec::new();
    if let Some(t) = config.users.get(who.user) {
        out.push((format!("limits.users.{}.{which}", who.user), pick(t)));
    }
    for g in who.groups {
        if let Some(t) = config.groups.get(g) {
            out.push((format!("limits.groups.{g}.{which}"), pick(t)));
        }
    }
    if let Some(t) = who.partition.and_then(|p| config.partitions.get(p)) {
        out.push((
            format!("limits.partitions.{}.{which}", who.partition.unwrap_or("")),
            pick(t),
        ));
    }
    out.push((
        format!("limits.{which}"),
        if max { &config.max } else { &config.default },
    ));
    out
}

/// One field across tiers: the user's entry, else the most generous of the
/// groups', else the partition's, else the global one; with its config key.
fn field<T: Clone>(
    tiers: &[(String, &LimitValues)],
    who: &Who,
    get: impl Fn(&LimitValues) -> Option<T>,
    more: impl Fn(&T, &T) -> bool,
) -> Option<(T, String)> {
    let user_key = format!("limits.users.{}.", who.user);
    if let Some((key, v)) = tiers.iter().find(|(k, _)| k.starts_with(&user_key)) {
        if let Some(x) = get(v) {
            return Some((x, key.clone()));
        }
    }
    let mut best: Option<(T, String)> = None;
    for (key, v) in tiers
        .iter()
        .filter(|(k, _)| k.starts_with("limits.groups."))
    {
        if let Some(x) = get(v) {
            if best.as_ref().is_none_or(|(b, _)| more(&x, b)) {
                best = Some((x, key.clone()));
            }
        }
    }
    if best.is_some() {
        return best;
    }
    tiers
        .iter()
        .filter(|(k, _)| !k.starts_with("limits.groups.") && !k.starts_with(&user_key))
        .find_map(|(key, v)| get(v).map(|x| (x, key.clone())))
}

fn size(option: &str, text: &str) -> Result<u64, LimitsError> {
    parse_size(text).map_err(|e| LimitsError::BadValue {
        option: option.to_string(),
        message: e.to_string(),
    })
}

/// Resolves the limits for `who` asking `asked`: each resource is what was
/// asked, else the default; never above the maximum (an ask above it is an
/// error, a default above it is lowered to it).
pub fn resolve(
    config: &LimitsConfig,
    who: &Who,
    asked: &Asked,
) -> Result<ResourceLimits, LimitsError> {
    let defaults = tiers(config, who, false);
    let maxima = tiers(config, who, true);
    let who_text = format!("user {}", who.user);
    // Sizes and counts resolve the same way; `parse` turns config/ask text into a number.
    let resolve_u64 = |option: &'static str,
                       ask: Option<(u64, String)>,
                       get: &dyn Fn(&LimitValues) -> Option<String>|
     -> Result<Option<u64>, LimitsError> {
        let default = field(&defaults, who, |v| get(v), |_, _| false)
            .map(|(t, key)| size(&key, &t))
            .transpose()?;
        let max = field(&maxima, who, |v| get(v), |_, _| false)
            .map(|(t, key)| size(&key, &t).map(|n| (n, t, key)))
            .transpose()?;
        let value = match (ask, &max) {
            (Some((n, text)), Some((m, mtext, key))) if n > *m => {
                return Err(LimitsError::AboveMax {
                    option,
                    asked: text,
                    who: who_text.clone(),
                    allowed: mtext.clone(),
                    key: key.clone(),
                })
            }
            (Some((n, _)), _) => Some(n),
            (None, _) => default,
        };
        Ok(match (value, &max) {
            (Some(v), Some((m, _, _))) => Some(v.min(*m)),
            (None, Some((m, _, _))) => Some(*m),
            (v, None) => v,
        })
    };
    let ask_size =
        |option: &str, t: &Option<String>| -> Result<Option<(u64, String)>, LimitsError> {
            t.as_ref()
                .map(|t| size(option, t).map(|n| (n, t.clone())))
                .transpose()
        };
    let ask_count = |n: Option<u64>| n.map(|n| (n, n.to_string()));
    let memory = resolve_u64("--memory", ask_size("--memory", &asked.memory)?, &|v| {
        v.memory.clone()
    })?;
    let swap = resolve_u64("--swap", ask_size("--swap", &asked.swap)?, &|v| {
        v.swap.clone()
    })?;
    let pids = resolve_u64("--pids-limit", ask_count(asked.pids), &|v| {
        v.pids.map(|p| p.to_string())
    })?;
    let read_bps = resolve_u64(
        "--io-read-bps",
        ask_size("--io-read-bps", &asked.io_read_bps)?,
        &|v| v.io_read_bps.clone(),
    )?;
    let write_bps = resolve_u64(
        "--io-write-bps",
        ask_size("--io-write-bps", &asked.io_write_bps)?,
        &|v| v.io_write_bps.clone(),
    )?;
    let read_iops = resolve_u64("--io-read-iops", ask_count(asked.io_read_iops), &|v| {
        v.io_read_iops.map(|p| p.to_string())
    })?;
    let write_iops = resolve_u64("--io-write-iops", ask_count(asked.io_write_iops), &|v| {
        v.io_write_iops.map(|p| p.to_string())
    })?;

    let cpus_default = field(&defaults, who, |v| v.cpus, |a, b| a > b).map(|(c, _)| c);
    let cpus_max = field(&maxima, who, |v| v.cpus, |a, b| a > b);
    if let Some(c) = asked.cpus {
        if c.is_nan() || c <= 0.0 {
            return Err(LimitsError::BadValue {
                option: "--cpus".into(),
                message: format!("{c} is not a number of CPUs above 0"),
            });
        }
    }
    let cpus = match (asked.cpus, &cpus_max) {
        (Some(c), Some((m, key))) if c > *m => {
            return Err(LimitsError::AboveMax {
                option: "--cpus",
                asked: c.to_string(),
                who: who_text,
                allowed: m.to_string(),
                key: key.clone(),
            })
        }
        (Some(c), _) => Some(c),
        (None, Some((m, _))) => Some(cpus_default.map_or(*m, |d| d.min(*m))),
        (None, None) => cpus_default,
    };

    let mut io = Vec::new();
    if read_bps.is_some() || write_bps.is_some() || read_iops.is_some() || write_iops.is_some() {
        let devices = field(&maxima, who, |v| v.io_devices.clone(), |_, _| false)
            .or_else(|| field(&defaults, who, |v| v.io_devices.clone(), |_, _| false))
            .map(|(d, _)| d)
            .unwrap_or_default();
        if devices.is_empty() {
            return Err(LimitsError::BadValue {
                option: "limits.*.io_devices".into(),
                message:
                    "io limits need the block devices they apply to (io_devices in berth.toml)"
                        .into(),
            });
        }
        for device in devices {
            let (major, minor) = block_device_numbers(&device)?;
            io.push(IoLimit {
                device,
                major,
                minor,
                read_bps,
                write_bps,
                read_iops,
                write_iops,
            });
        }
    }
    Ok(ResourceLimits {
        memory,
        swap,
        cpus,
        pids,
        io,
    })
}

fn block_device_numbers(device: &std::path::Path) -> Result<(u64, u64), LimitsError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let bad = |message: String| LimitsError::BadValue {
        option: "io_devices".into(),
        message,
    };
    let meta = std::fs::metadata(device).map_err(|e| bad(format!("{}: {e}", device.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(bad(format!("{} is not a block device", device.display())));
    }
    let rdev = meta.rdev();
    Ok((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LimitsConfig {
        let text = r#"
[limits.default]
memory = "1G"
pids = 100
[limits.max]
memory = "4G"
cpus = 2.0
pids = 1000
[limits.users.alice.max]
memory = "16G"
[limits.groups.big.max]
memory = "8G"
cpus = 8.0
[limits.groups.bigger.max]
cpus = 16.0
[limits.partitions.gpu.default]
memory = "2G"
"#;
        slurm_conf::Config::parse(text, std::path::Path::new("t.toml"))
            .unwrap()
            .limits
    }

    fn who<'a>(user: &'a str, groups: &'a [String], partition: Option<&'a str>) -> Who<'a> {
        Who {
            user,
            groups,
            partition,
        }
    }

    #[test]
    fn defaults_apply_and_maxima_cap() {
        let c = config();
        let l = resolve(&c, &who("bob", &[], None), &Asked::default()).unwrap();
        assert_eq!(l.memory, Some(1 << 30));
        assert_eq!(l.pids, Some(100));
        assert_eq!(l.cpus, Some(2.0)); // no default: the maximum
        let l = resolve(&c, &who("bob", &[], Some("gpu")), &Asked::default()).unwrap();
        assert_eq!(l.memory, Some(2 << 30));
    }

    #[test]
    fn asks_within_the_maximum_are_kept_above_it_refused() {
        let c = config();
        let asked = Asked {
            memory: Some("3G".into()),
            cpus: Some(0.5),
            ..Default::default()
        };
        let l = resolve(&c, &who("bob", &[], None), &asked).unwrap();
        assert_eq!((l.memory, l.cpus), (Some(3 << 30), Some(0.5)));
        let asked = Asked {
            memory: Some("5G".into()),
            ..Default::default()
        };
        let err = resolve(&c, &who("bob", &[], None), &asked)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--memory 5G is more than berth.toml allows user bob (4G, from [limits.max])"
        );
        // alice's own entry and the most generous group win over the global maximum.
        assert!(resolve(&c, &who("alice", &[], None), &asked).is_ok());
        let groups = ["big".to_string(), "bigger".to_string()];
        let asked = Asked {
            memory: Some("8G".into()),
            cpus: Some(12.0),
            ..Default::default()
        };
        assert!(resolve(&c, &who("bob", &groups, None), &asked).is_ok());
        let asked = Asked {
            pids: Some(5000),
            ..Default::default()
        };
        let err = resolve(&c, &who("bob", &[], None), &asked)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--pids-limit 5000"), "{err}");
    }

    #[test]
    fn io_limits_need_devices() {
        let c = config();
        let asked = Asked {
            io_read_bps: Some("10M".into()),
            ..Default::default()
        };
        let err = resolve(&c, &who("bob", &[], None), &asked)
            .unwrap_err()
            .to_string();
        assert!(err.contains("io_devices"), "{err}");
    }
}
