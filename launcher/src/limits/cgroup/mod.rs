//! A container's cgroup: made under a parent (berth.toml's
//! `limits.cgroup_parent`, or a Slurm step's cgroup), given the limits and
//! the device allow-list, holding the container's processes, removed when
//! the container ends. Split as crun splits it: [`placement`] (where: the
//! root, the directories per controller, making and removing them),
//! [`resources`] (what: the limits as file writes) and [`devices`] (the
//! device allow-list); [`ContainerCgroup`] composes them. The root is a
//! [`CgroupRoot`]: the host's ([`CgroupRoot::host`], found with
//! cgroups-rs), or a temporary directory in tests. Files are written
//! directly, so that any root works.

pub mod devices;
pub mod placement;
pub mod resources;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use placement::Placement;
pub use placement::{remove_dir_killing, CgroupRoot, Version};

use super::device_filter::DeviceRule;
use super::{LimitsError, ResourceLimits};

/// v1 controllers berth uses (cpuset is left out: a v1 child starts with no CPUs).
pub const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "blkio", "devices"];

/// A cgroup berth made for one container: one directory on v2; on v1 one
/// per controller it needs, each where `v1_paths` says (Slurm's step
/// cgroups differ between hierarchies) or at `path`.
#[derive(Debug)]
pub struct ContainerCgroup {
    placement: Placement,
}

fn err(path: &str, message: impl std::fmt::Display) -> LimitsError {
    LimitsError::Cgroup {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// A cgroup file that could not be written: its path and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Writes `value` to the file `name` in `dir`, made if missing (as
/// cgroups-rs opened them), so a plain directory can stand in for cgroupfs.
fn write_file(dir: &Path, name: &str, value: &str) -> Result<(), WriteError> {
    let path = dir.join(name);
    std::fs::write(&path, value).map_err(|source| WriteError { path, source })
}

/// Whether the unified (v2) hierarchy is mounted at /sys/fs/cgroup.
pub fn is_v2() -> bool {
    cgroups_rs::hierarchies::is_cgroup2_unified_mode()
}

impl ContainerCgroup {
    /// Makes `path` under the host's cgroup root: see [`Self::create_in`].
    pub fn create(
        path: &str,
        v1_paths: &BTreeMap<String, String>,
        limits: &ResourceLimits,
        devices: Option<&[DeviceRule]>,
    ) -> Result<ContainerCgroup, LimitsError> {
        ContainerCgroup::create_in(CgroupRoot::host(), path, v1_paths, limits, devices)
    }

    /// Makes `path` (relative to `root`; missing parents are made too; on
    /// v1 `v1_paths` may place a controller elsewhere) and writes `limits`
    /// and, when given, the device allow-list. What it made is removed
    /// when a step fails.
    pub fn create_in(
        root: CgroupRoot,
        path: &str,
        v1_paths: &BTreeMap<String, String>,
        limits: &ResourceLimits,
        devices: Option<&[DeviceRule]>,
    ) -> Result<ContainerCgroup, LimitsError> {
        // v1 has a hierarchy per controller: only those with work to do.
        let mut v1_controllers = resources::v1_controllers(limits);
        if devices.is_some() {
            v1_controllers.push("devices");
        }
        // On failure `made` is dropped, which removes the parts made.
        let mut made = ContainerCgroup {
            placement: Placement::new(root, path),
        };
        made.placement.make(&v1_controllers, v1_paths)?;
        resources::apply(&made.placement, limits)?;
        if let Some(rules) = devices {
            devices::apply(&made.placement, rules)?;
        }
        tracing::debug!(cgroup = path, dirs = ?made.dirs(), "made the container's cgroup");
        Ok(made)
    }

    /// Makes the cgroup `spec` describes, first sweeping the parent of
    /// cgroups a killed berth left behind.
    pub fn for_spec(spec: &crate::spec::CgroupSpec) -> Result<ContainerCgroup, LimitsError> {
        ContainerCgroup::for_spec_in(CgroupRoot::host(), spec)
    }

    /// [`Self::for_spec`] under `root`.
    pub fn for_spec_in(
        root: CgroupRoot,
        spec: &crate::spec::CgroupSpec,
    ) -> Result<ContainerCgroup, LimitsError> {
        if let Some((parent, _)) = spec.path.rsplit_once('/') {
            placement::remove_stale_in(&root, parent);
        }
        ContainerCgroup::create_in(
            root,
            &spec.path,
            &spec.v1_paths,
            &spec.limits,
            spec.devices.as_deref(),
        )
    }

    /// The cgroup's path relative to the root.
    pub fn path(&self) -> &str {
        &self.placement.path
    }

    /// The cgroup's directories (one per v1 controller, one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.placement.dirs()
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
        if !self.placement.root.is_v2() {
            return None;
        }
        let dir = self.dirs().into_iter().next()?;
        std::fs::File::open(dir).ok().map(Into::into)
    }

    /// Moves process `pid` (and on v1 all its threads) into the cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), LimitsError> {
        self.placement.enter(pid)
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

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        self.remove();
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

/// Removes empty cgroups under `parent` (relative to the host's root) left
/// by berth processes that were killed (named `run-<pid>` after a berth
/// that no longer runs).
pub fn remove_stale(parent: &str) {
    placement::remove_stale_in(&CgroupRoot::host(), parent);
}
