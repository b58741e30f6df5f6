//! A container's cgroup: made under a parent (berth.toml's
//! `limits.cgroup_parent`, or a Slurm step's cgroup), given the limits and
//! the device allow-list, holding the container's processes, removed when
//! the container ends. Written with cgroups-rs, for cgroup v2 and v1.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups_rs::blkio::BlkIoController;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{Cgroup, CgroupPid, MaxValue};

use super::device_filter::{self, DeviceRule};
use super::{LimitsError, ResourceLimits};

/// cpu.max period: 100 ms.
const CPU_PERIOD_US: u64 = 100_000;

/// v1 controllers berth uses (cpuset is left out: a v1 child starts with no CPUs).
pub const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "blkio", "devices"];

/// A cgroup berth made for one container: one directory on v2; on v1 one
/// per controller it needs, each where `v1_paths` says (Slurm's step
/// cgroups differ between hierarchies) or at `path`.
pub struct ContainerCgroup {
    parts: Vec<Cgroup>,
    /// Relative to the cgroup root (v2, and v1 controllers without a path of their own).
    path: String,
}

fn err(path: &str, message: impl std::fmt::Display) -> LimitsError {
    LimitsError::Cgroup {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// Whether the unified (v2) hierarchy is mounted at /sys/fs/cgroup.
pub fn is_v2() -> bool {
    cgroups_rs::hierarchies::is_cgroup2_unified_mode()
}

impl ContainerCgroup {
    /// Makes `path` (relative to the cgroup root; missing parents are made
    /// too; on v1 `v1_paths` may place a controller elsewhere) and writes
    /// `limits` and, when given, the device allow-list.
    pub fn create(
        path: &str,
        v1_paths: &std::collections::BTreeMap<String, String>,
        limits: &ResourceLimits,
        devices: Option<&[DeviceRule]>,
    ) -> Result<ContainerCgroup, LimitsError> {
        let hierarchy = cgroups_rs::hierarchies::auto();
        let v2 = hierarchy.v2();
        let mut made = ContainerCgroup {
            parts: Vec::new(),
            path: path.to_string(),
        };
        if v2 {
            made.parts.push(
                Cgroup::new(hierarchy, path)
                    .map_err(|e| err(path, format!("cannot create it: {e}")))?,
            );
        } else {
            // v1 has a hierarchy per controller: only those with work to do.
            let wanted = [
                ("memory", limits.memory.is_some() || limits.swap.is_some()),
                ("pids", limits.pids.is_some()),
                ("cpu", limits.cpus.is_some()),
                ("blkio", !limits.io.is_empty()),
                ("devices", devices.is_some()),
            ];
            for (controller, _) in wanted.iter().filter(|(_, needed)| *needed) {
                let at = v1_paths.get(*controller).map_or(path, String::as_str);
                // On failure `made` is dropped, which removes the parts made.
                made.parts.push(
                    Cgroup::new_with_specified_controllers(
                        cgroups_rs::hierarchies::auto(),
                        at,
                        Some(vec![controller.to_string()]),
                    )
                    .map_err(|e| err(at, format!("cannot create it: {e}")))?,
                );
            }
        }
        made.write_limits(limits, v2)?;
        if let Some(rules) = devices {
            made.write_devices(rules, v2)?;
        }
        Ok(made)
    }

    /// Makes the cgroup `spec` describes, first sweeping the parent of
    /// cgroups a killed berth left behind.
    pub fn for_spec(spec: &crate::spec::CgroupSpec) -> Result<ContainerCgroup, LimitsError> {
        if let Some((parent, _)) = spec.path.rsplit_once('/') {
            remove_stale(parent);
        }
        ContainerCgroup::create(
            &spec.path,
            &spec.v1_paths,
            &spec.limits,
            spec.devices.as_deref(),
        )
    }

    /// The cgroup's path relative to the root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cgroup's directory in the v2 hierarchy.
    fn v2_dir(&self) -> PathBuf {
        Path::new(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT).join(&self.path)
    }

    fn write_limits(&self, l: &ResourceLimits, v2: bool) -> Result<(), LimitsError> {
        let fail = |what: &str, e: cgroups_rs::error::Error| {
            err(&self.path, format!("cannot set {what}: {e}"))
        };
        if l.memory.is_some() || l.swap.is_some() {
            let mem: &MemController = self.controller("memory")?;
            if let Some(bytes) = l.memory {
                mem.set_limit(bytes as i64)
                    .map_err(|e| fail("memory.max", e))?;
            }
            if let Some(swap) = l.swap {
                // v1 limits memory and swap together.
                let value = match (v2, l.memory) {
                    (true, _) => swap as i64,
                    (false, Some(m)) => (m + swap) as i64,
                    (false, None) => -1,
                };
                mem.set_memswap_limit(value)
                    .map_err(|e| fail("memory.swap.max", e))?;
            }
        }
        if let Some(pids) = l.pids {
            let pid: &PidController = self.controller("pids")?;
            pid.set_pid_max(MaxValue::Value(pids as i64))
                .map_err(|e| fail("pids.max", e))?;
        }
        if let Some(cpus) = l.cpus {
            let cpu: &CpuController = self.controller("cpu")?;
            let quota = ((cpus * CPU_PERIOD_US as f64) as i64).max(1000);
            cpu.set_cfs_quota_and_period(Some(quota), Some(CPU_PERIOD_US))
                .map_err(|e| fail("cpu.max", e))?;
        }
        for io in &l.io {
            let blk: &BlkIoController = self.controller(if v2 { "io" } else { "blkio" })?;
            let (maj, min) = (io.major, io.minor);
            let what = format!("io.max of {}", io.device.display());
            if let Some(n) = io.read_bps {
                blk.throttle_read_bps_for_device(maj, min, n)
                    .map_err(|e| fail(&what, e))?;
            }
            if let Some(n) = io.write_bps {
                blk.throttle_write_bps_for_device(maj, min, n)
                    .map_err(|e| fail(&what, e))?;
            }
            if let Some(n) = io.read_iops {
                blk.throttle_read_iops_for_device(maj, min, n)
                    .map_err(|e| fail(&what, e))?;
            }
            if let Some(n) = io.write_iops {
                blk.throttle_write_iops_for_device(maj, min, n)
                    .map_err(|e| fail(&what, e))?;
            }
        }
        Ok(())
    }

    fn controller<'a, T>(&'a self, name: &str) -> Result<&'a T, LimitsError>
    where
        T: cgroups_rs::Controller + cgroups_rs::ControllIdentifier,
        &'a T: From<&'a cgroups_rs::Subsystem>,
    {
        self.parts
            .iter()
            .find_map(|p| p.controller_of::<T>())
            .ok_or_else(|| {
                err(
                    &self.path,
                    format!("the {name} controller is not available on this node"),
                )
            })
    }

    /// v2: a device filter program; v1: deny all, then allow each rule.
    fn write_devices(&self, rules: &[DeviceRule], v2: bool) -> Result<(), LimitsError> {
        if v2 {
            let dir = std::fs::File::open(self.v2_dir()).map_err(|e| err(&self.path, e))?;
            let program = crate::sys::load_device_filter(&device_filter::program(rules))
                .map_err(|e| err(&self.path, e))?;
            return crate::sys::attach_device_filter(dir.as_fd(), program.as_fd())
                .map_err(|e| err(&self.path, format!("cannot attach the device filter: {e}")));
        }
        let devices: &DevicesController = self.controller("devices")?;
        let fail = |e: cgroups_rs::error::Error| {
            err(&self.path, format!("cannot write the device list: {e}"))
        };
        devices
            .deny_device(DeviceType::All, -1, -1, &DevicePermissions::all())
            .map_err(fail)?;
        for rule in rules {
            let mut perms = Vec::new();
            if rule.access & 2 != 0 {
                perms.push(DevicePermissions::Read);
            }
            if rule.access & 4 != 0 {
                perms.push(DevicePermissions::Write);
            }
            if rule.access & 1 != 0 {
                perms.push(DevicePermissions::MkNod);
            }
            let kind = if rule.char_device {
                DeviceType::Char
            } else {
                DeviceType::Block
            };
            let number = |n: Option<u32>| n.map_or(-1, i64::from);
            devices
                .allow_device(kind, number(rule.major), number(rule.minor), &perms)
                .map_err(fail)?;
        }
        Ok(())
    }

    /// The cgroup's directories (one per v1 controller, one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .parts
            .iter()
            .flat_map(|p| p.subsystems())
            .map(|s| s.to_controller().path().to_path_buf())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Leaves the cgroup in place when this handle goes (its processes
    /// outlive the caller: a Slurm step's keeper); returns its directories,
    /// for whoever removes it later.
    pub fn keep(self) -> Vec<PathBuf> {
        let dirs = self.dirs();
        std::mem::forget(self);
        dirs
    }

    /// Opens the cgroup's directory on cgroup v2 (for a child to be born
    /// in it); None on v1.
    pub fn open_v2_dir(&self) -> Option<std::os::fd::OwnedFd> {
        if !is_v2() {
            return None;
        }
        let dir = self.dirs().into_iter().next()?;
        std::fs::File::open(dir).ok().map(Into::into)
    }

    /// Moves process `pid` (and on v1 all its threads) into the cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), LimitsError> {
        for part in &self.parts {
            part.add_task_by_tgid(CgroupPid::from(pid as u64))
                .map_err(|e| {
                    err(
                        part.path(),
                        format!("cannot move process {pid} into it: {e}"),
                    )
                })?;
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer killed a process in it.
    pub fn oom_kills(&self) -> u64 {
        self.dirs().iter().map(|d| oom_kills_in(d)).sum()
    }

    /// Kills what is left in it and removes it.
    pub fn remove(&self) {
        for dir in self.dirs() {
            if let Err(e) = remove_dir_killing(&dir) {
                tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove the container's cgroup");
            }
        }
    }
}

/// OOM kills recorded in one cgroup directory (`memory.events` on v2,
/// `memory.oom_control` on v1; 0 where there is neither).
pub fn oom_kills_in(dir: &Path) -> u64 {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Kills what is in one cgroup directory and removes it once those
/// processes are gone (up to 2 s); a directory already gone is fine.
pub fn remove_dir_killing(dir: &Path) -> std::io::Result<()> {
    for _ in 0..2000 {
        for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => return other,
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EBUSY))
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes empty cgroups under `parent` left by berth processes that were
/// killed (named `run-<pid>` after a berth that no longer runs).
pub fn remove_stale(parent: &str) {
    let root = Path::new(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT);
    let parents: Vec<PathBuf> = if is_v2() {
        vec![root.join(parent)]
    } else {
        V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c).join(parent))
            .collect()
    };
    for dir in parents {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("run-")
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let empty = std::fs::read_to_string(entry.path().join("cgroup.procs"))
                .is_ok_and(|p| p.trim().is_empty());
            if empty && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}
