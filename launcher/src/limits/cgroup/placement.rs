//! Where a container's cgroup goes (crun's cgroup-setup): the cgroup root
//! and its kind, the directories the cgroup takes under it (one on v2, one
//! per controller on v1), making them with their missing parents, moving
//! processes in, and removing them. Nothing here knows what limits are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{err, write_file, V1_CONTROLLERS};
use crate::limits::LimitsError;

/// The kind of hierarchy mounted at a cgroup root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Where cgroups are mounted: the host's /sys/fs/cgroup
/// ([`CgroupRoot::host`]), or a directory laid out like it (tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    /// The unified mount (v2), or the directory of the controllers' mounts (v1).
    pub path: PathBuf,
    /// The kind of hierarchy.
    pub version: Version,
    /// v1: where each of [`V1_CONTROLLERS`] is mounted; one missing is not.
    pub v1_mounts: BTreeMap<String, PathBuf>,
}

impl CgroupRoot {
    /// The host's: v2 at /sys/fs/cgroup, or v1's controllers where
    /// /proc/self/mountinfo has them mounted (found by cgroups-rs).
    pub fn host() -> CgroupRoot {
        use cgroups_rs::Controllers;
        let path = PathBuf::from(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT);
        if super::is_v2() {
            return CgroupRoot::v2(path);
        }
        let mounts = cgroups_rs::hierarchies::V1::new();
        let v1_mounts = [
            Controllers::Mem,
            Controllers::Pids,
            Controllers::Cpu,
            Controllers::BlkIo,
            Controllers::Devices,
        ]
        .into_iter()
        .filter_map(|c| Some((c.to_string(), mounts.get_mount_point(c)?)))
        .collect();
        CgroupRoot {
            path,
            version: Version::V1,
            v1_mounts,
        }
    }

    /// A unified hierarchy at `path`.
    pub fn v2(path: impl Into<PathBuf>) -> CgroupRoot {
        CgroupRoot {
            path: path.into(),
            version: Version::V2,
            v1_mounts: BTreeMap::new(),
        }
    }

    /// v1 hierarchies at `path`/CONTROLLER, for each of [`V1_CONTROLLERS`].
    pub fn v1(path: impl Into<PathBuf>) -> CgroupRoot {
        let path = path.into();
        let v1_mounts = V1_CONTROLLERS
            .iter()
            .map(|c| (c.to_string(), path.join(c)))
            .collect();
        CgroupRoot {
            path,
            version: Version::V1,
            v1_mounts,
        }
    }

    /// Whether it is the unified hierarchy.
    pub fn is_v2(&self) -> bool {
        self.version == Version::V2
    }

    /// The directories `rel` names: one on v2, one per mounted controller on v1.
    pub fn dirs_at(&self, rel: &str) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.path.join(rel)],
            Version::V1 => V1_CONTROLLERS
                .iter()
                .filter_map(|c| self.v1_mounts.get(*c))
                .map(|m| m.join(rel))
                .collect(),
        }
    }
}

/// One directory of a container's cgroup.
#[derive(Debug)]
pub struct Part {
    /// Its path relative to its hierarchy's root (what errors name).
    pub at: String,
    /// The directory.
    pub dir: PathBuf,
    /// The controllers written through it.
    pub controllers: Vec<String>,
}

/// The directories one container's cgroup takes.
#[derive(Debug)]
pub struct Placement {
    /// The root they are under.
    pub root: CgroupRoot,
    /// The cgroup's path relative to the root (v2, and v1 controllers
    /// without a path of their own).
    pub path: String,
    /// The directories made so far.
    pub parts: Vec<Part>,
}

impl Placement {
    /// Nothing made yet.
    pub fn new(root: CgroupRoot, path: &str) -> Placement {
        Placement {
            root,
            path: path.to_string(),
            parts: Vec::new(),
        }
    }

    /// Makes the directories: on v2 `path`, with the root's controllers
    /// enabled in the root's and each parent's `cgroup.subtree_control`;
    /// on v1 one per `v1_controllers` (at `v1_paths`' path for it, else
    /// `path`). Parts made stay in `parts` when a later one fails.
    pub fn make(
        &mut self,
        v1_controllers: &[&str],
        v1_paths: &BTreeMap<String, String>,
    ) -> Result<(), LimitsError> {
        if self.root.is_v2() {
            return self.make_v2();
        }
        for controller in v1_controllers {
            let at = v1_paths.get(*controller).unwrap_or(&self.path).clone();
            // An unmounted controller gets no directory: the write that
            // needs it says it is not available.
            let Some(mount) = self.root.v1_mounts.get(*controller) else {
                continue;
            };
            let dir = mount.join(&at);
            std::fs::create_dir_all(&dir)
                .map_err(|e| err(&at, format!("cannot create it: {}: {e}", dir.display())))?;
            self.parts.push(Part {
                at,
                dir,
                controllers: vec![controller.to_string()],
            });
        }
        Ok(())
    }

    /// v2: each missing directory of `path` in turn, as cgroups-rs did.
    fn make_v2(&mut self) -> Result<(), LimitsError> {
        let controllers: Vec<String> =
            std::fs::read_to_string(self.root.path.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
        let enable = |dir: &Path| {
            for c in &controllers {
                // Refused where the parent lacks it, or for processes in it: as before, not an error.
                let _ = write_file(dir, "cgroup.subtree_control", &format!("+{c}"));
            }
        };
        enable(&self.root.path);
        let mut dir = self.root.path.clone();
        let elements: Vec<&str> = self.path.split('/').collect();
        for (i, element) in elements.iter().enumerate() {
            dir.push(element);
            if !dir.exists() {
                std::fs::create_dir(&dir).map_err(|e| {
                    err(
                        &self.path,
                        format!("cannot create it: {}: {e}", dir.display()),
                    )
                })?;
            }
            if i + 1 < elements.len() {
                enable(&dir);
            }
        }
        self.parts.push(Part {
            at: self.path.clone(),
            dir,
            controllers,
        });
        Ok(())
    }

    /// The directory `controller` is written through, or an error naming it
    /// when this node has it nowhere.
    pub fn dir_of(&self, controller: &str) -> Result<&Path, LimitsError> {
        self.parts
            .iter()
            .find(|p| p.controllers.iter().any(|c| c == controller))
            .map(|p| p.dir.as_path())
            .ok_or_else(|| {
                err(
                    &self.path,
                    format!("the {controller} controller is not available on this node"),
                )
            })
    }

    /// The directories made, sorted, each once.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.parts.iter().map(|p| p.dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Moves process `pid` (on v1 all its threads) into each directory.
    pub fn enter(&self, pid: u32) -> Result<(), LimitsError> {
        for part in &self.parts {
            write_file(&part.dir, "cgroup.procs", &pid.to_string())
                .map_err(|e| err(&part.at, format!("cannot move process {pid} into it: {e}")))?;
        }
        Ok(())
    }
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

/// Removes empty cgroups under `parent` (relative to `root`) left by berth
/// processes that were killed.
pub fn remove_stale_in(root: &CgroupRoot, parent: &str) {
    for dir in root.dirs_at(parent) {
        for stale in stale_in(&dir) {
            let _ = std::fs::remove_dir(stale);
        }
    }
}

/// The cgroups in `dir` named `run-<pid>` after a berth that no longer
/// runs, with no process in them.
pub fn stale_in(dir: &Path) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
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
            stale.push(entry.path());
        }
    }
    stale
}
