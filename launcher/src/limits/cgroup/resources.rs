//! What a container's cgroup limits (crun's cgroup-resources):
//! [`ResourceLimits`] as writes to the controllers' files, v2's or v1's,
//! the files and values cgroups-rs wrote.

use super::placement::Placement;
use super::{err, write_file};
use crate::limits::{LimitsError, ResourceLimits};

/// cpu.max period: 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;

/// One write to a controller's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The controller whose directory holds the file.
    pub controller: &'static str,
    /// The file.
    pub file: &'static str,
    /// What is written.
    pub value: String,
    /// The limit, as errors name it (`memory.max`, `io.max of /dev/sda`).
    pub what: String,
}

/// The v1 controllers with work to do for `l`, in the order they are made.
pub fn v1_controllers(l: &ResourceLimits) -> Vec<&'static str> {
    [
        ("memory", l.memory.is_some() || l.swap.is_some()),
        ("pids", l.pids.is_some()),
        ("cpu", l.cpus.is_some()),
        ("blkio", !l.io.is_empty()),
    ]
    .into_iter()
    .filter_map(|(c, needed)| needed.then_some(c))
    .collect()
}

/// A v2 number where -1 is "max".
fn v2_number(n: i64) -> String {
    if n == -1 {
        "max".to_string()
    } else {
        n.to_string()
    }
}

/// The writes that set `l`, in order: memory, swap, pids, cpu, then io
/// per device (read bps, write bps, read iops, write iops).
pub fn writes(l: &ResourceLimits, v2: bool) -> Vec<Write> {
    let mut out = Vec::new();
    let mut push = |controller, file, value: String, what: &str| {
        out.push(Write {
            controller,
            file,
            value,
            what: what.to_string(),
        })
    };
    if let Some(bytes) = l.memory {
        let (file, value) = match v2 {
            true => ("memory.max", v2_number(bytes as i64)),
            false => ("memory.limit_in_bytes", (bytes as i64).to_string()),
        };
        push("memory", file, value, "memory.max");
    }
    if let Some(swap) = l.swap {
        // v1 limits memory and swap together.
        let (file, value) = match (v2, l.memory) {
            (true, _) => ("memory.swap.max", v2_number(swap as i64)),
            (false, Some(m)) => (
                "memory.memsw.limit_in_bytes",
                ((m + swap) as i64).to_string(),
            ),
            (false, None) => ("memory.memsw.limit_in_bytes", "-1".to_string()),
        };
        push("memory", file, value, "memory.swap.max");
    }
    if let Some(pids) = l.pids {
        push("pids", "pids.max", (pids as i64).to_string(), "pids.max");
    }
    if let Some(cpus) = l.cpus {
        let quota = ((cpus * CPU_PERIOD_US as f64) as i64).max(1000);
        if v2 {
            push(
                "cpu",
                "cpu.max",
                format!("{quota} {CPU_PERIOD_US}"),
                "cpu.max",
            );
        } else {
            push("cpu", "cpu.cfs_quota_us", quota.to_string(), "cpu.max");
            push(
                "cpu",
                "cpu.cfs_period_us",
                CPU_PERIOD_US.to_string(),
                "cpu.max",
            );
        }
    }
    for io in &l.io {
        let what = format!("io.max of {}", io.device.display());
        let number = format!("{}:{}", io.major, io.minor);
        let limits = [
            (io.read_bps, "rbps", "blkio.throttle.read_bps_device"),
            (io.write_bps, "wbps", "blkio.throttle.write_bps_device"),
            (io.read_iops, "riops", "blkio.throttle.read_iops_device"),
            (io.write_iops, "wiops", "blkio.throttle.write_iops_device"),
        ];
        for (limit, key, v1_file) in limits {
            let Some(n) = limit else { continue };
            match v2 {
                true => push("io", "io.max", format!("{number} {key}={n}"), &what),
                false => push("blkio", v1_file, format!("{number} {n}"), &what),
            }
        }
    }
    out
}

/// Writes `l` into the cgroup `placement` made; the first write that
/// fails (or a controller this node lacks) is the error.
pub fn apply(placement: &Placement, l: &ResourceLimits) -> Result<(), LimitsError> {
    for w in writes(l, placement.root.is_v2()) {
        let dir = placement.dir_of(w.controller)?;
        tracing::debug!(dir = %dir.display(), file = w.file, value = %w.value, "cgroup limit");
        write_file(dir, w.file, &w.value)
            .map_err(|e| err(&placement.path, format!("cannot set {}: {e}", w.what)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::IoLimit;

    fn lines(l: &ResourceLimits, v2: bool) -> Vec<String> {
        writes(l, v2)
            .iter()
            .map(|w| format!("{}/{} {}", w.controller, w.file, w.value))
            .collect()
    }

    fn all() -> ResourceLimits {
        ResourceLimits {
            memory: Some(64 << 20),
            swap: Some(16 << 20),
            cpus: Some(1.5),
            pids: Some(42),
            io: vec![IoLimit {
                device: "/dev/sda".into(),
                major: 8,
                minor: 0,
                read_bps: Some(1000),
                write_bps: Some(2000),
                read_iops: Some(30),
                write_iops: Some(40),
            }],
        }
    }

    #[test]
    fn v2_writes_each_limit_to_its_file_in_order() {
        assert_eq!(
            lines(&all(), true),
            [
                "memory/memory.max 67108864",
                "memory/memory.swap.max 16777216",
                "pids/pids.max 42",
                "cpu/cpu.max 150000 100000",
                "io/io.max 8:0 rbps=1000",
                "io/io.max 8:0 wbps=2000",
                "io/io.max 8:0 riops=30",
                "io/io.max 8:0 wiops=40",
            ]
        );
    }

    #[test]
    fn v1_writes_memory_with_swap_and_quota_then_period() {
        assert_eq!(
            lines(&all(), false),
            [
                "memory/memory.limit_in_bytes 67108864",
                "memory/memory.memsw.limit_in_bytes 83886080",
                "pids/pids.max 42",
                "cpu/cpu.cfs_quota_us 150000",
                "cpu/cpu.cfs_period_us 100000",
                "blkio/blkio.throttle.read_bps_device 8:0 1000",
                "blkio/blkio.throttle.write_bps_device 8:0 2000",
                "blkio/blkio.throttle.read_iops_device 8:0 30",
                "blkio/blkio.throttle.write_iops_device 8:0 40",
            ]
        );
        assert_eq!(v1_controllers(&all()), ["memory", "pids", "cpu", "blkio"]);
    }

    #[test]
    fn swap_alone_lifts_the_v1_limit_and_tiny_cpus_get_a_floor() {
        let l = ResourceLimits {
            swap: Some(1 << 20),
            cpus: Some(0.001),
            ..Default::default()
        };
        assert_eq!(
            lines(&l, false),
            [
                "memory/memory.memsw.limit_in_bytes -1",
                "cpu/cpu.cfs_quota_us 1000",
                "cpu/cpu.cfs_period_us 100000",
            ]
        );
        assert_eq!(lines(&l, true)[1], "cpu/cpu.max 1000 100000");
        assert!(writes(&ResourceLimits::default(), true).is_empty());
        assert!(v1_controllers(&ResourceLimits::default()).is_empty());
    }
}
