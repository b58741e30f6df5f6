//! The record of a Slurm step's container keeper: what `berth slurm-start`
//! (and `slurm-join`, for a step's view into a named container) answers
//! the SPANK plugin with one JSON line, and what the plugin keeps in the
//! container's state directory (`keeper.json`, root's only).
//!
//! A keeper is recognised by its pid and its start time (`/proc/PID/stat`),
//! read when it was started: a pid reused by another process never
//! passes for it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's format: raised when a field's meaning changes, so that a
/// plugin and a `berth` binary of different releases refuse each other
/// with a clear message instead of misreading a field.
pub const RECORD_FORMAT: u32 = 3;

/// A keeper and what tasks need to join its container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct KeeperRecord {
    /// [`RECORD_FORMAT`] of the `berth` that wrote it (0: before formats).
    pub format: u32,
    /// The keeper's pid (in the host's pid namespace).
    pub pid: i32,
    /// Its start time in clock ticks after boot (/proc/PID/stat, field 22).
    pub started: u64,
    /// The image's id in the store.
    pub image: String,
    /// The container's environment (image ENV, PATH): `NAME=value`.
    pub env: Vec<String>,
    /// What the container's devices need (CUDA_VISIBLE_DEVICES...): `NAME=value`.
    pub device_env: Vec<String>,
    /// Where each task starts (`--container-workdir`, made by the helper),
    /// or None: where Slurm starts it.
    pub workdir: Option<String>,
    /// The container has a network namespace of its own (tasks join it).
    pub own_network: bool,
    /// The image's working directory (its `WorkingDir`, else `/`): where
    /// the tasks start without `--container-workdir`, and what a relative
    /// one is taken from.
    pub image_workdir: Option<String>,
    /// The tasks are root in a user namespace of their own, mapped to the
    /// job's user (`--container-remap-root`).
    pub remap_root: bool,
    /// Variables whose job value wins over the container's (`--container-env`).
    pub job_env: Vec<String>,
    /// The image's Entrypoint.
    pub entrypoint: Vec<String>,
    /// With `--container-entrypoint`: the environment the entrypoint left
    /// for the command (it ran once, at the step's start), which the tasks
    /// take in place of `env`. Set by the plugin, for this step only.
    pub entrypoint_env: Option<Vec<String>>,
    /// The working directory the entrypoint ran its command in (the tasks
    /// start there without `--container-workdir`, as in pyxis).
    pub entrypoint_workdir: Option<String>,
    /// Why the entrypoint failed (every task of the step fails with it).
    pub entrypoint_failed: Option<String>,
    /// The seccomp program tasks load before exec, hex-encoded BPF.
    pub seccomp: Option<String>,
    /// The capabilities (numbers) a remapped root keeps in its own user namespace.
    pub root_capabilities: Vec<u8>,
    /// The container's cgroup directories, removed with it.
    pub cgroup_dirs: Vec<PathBuf>,
    /// The step that made it (set by the plugin).
    pub step: Option<u32>,
    /// The job's user it was made for (set by the plugin): only they may
    /// join it from another step (`--container-name=JOBID.STEPID`).
    pub uid: u32,
    /// For a step's view into a named container: the container's own
    /// keeper (pid and start time), whose pid namespace the tasks join (the
    /// view's keeper holds only the step's mount namespace). None: this
    /// keeper's.
    pub pid_namespace: Option<(i32, u64)>,
    /// slurmstepd signals a task's descendants as well as the task (this
    /// node's Slurm configuration, read once by the helper): a task's relay
    /// then passes none of slurmstepd's signals on.
    pub slurm_signals_task_descendants: bool,
}

impl KeeperRecord {
    /// A record of the keeper `pid`, started just now.
    pub fn of_keeper(pid: i32) -> io::Result<KeeperRecord> {
        Ok(KeeperRecord {
            format: RECORD_FORMAT,
            pid,
            started: start_time(pid)?,
            ..Default::default()
        })
    }

    /// The keeper whose pid namespace the tasks join: the container's own.
    pub fn pid_namespace_keeper(&self) -> KeeperRecord {
        let (pid, started) = self.pid_namespace.unwrap_or((self.pid, self.started));
        KeeperRecord {
            pid,
            started,
            ..Default::default()
        }
    }

    /// Whether the keeper still runs (the same process, not a reused pid).
    pub fn is_alive(&self) -> bool {
        self.pid > 0 && start_time(self.pid).is_ok_and(|t| t == self.started)
    }

    /// A pidfd of the keeper, checked after it is open to be the recorded
    /// process (pid and start time): from then on a reused pid cannot pass
    /// for it.
    pub fn pidfd(&self) -> io::Result<std::os::fd::OwnedFd> {
        let gone = || io::Error::new(io::ErrorKind::NotFound, "the keeper has ended");
        if self.pid <= 0 {
            return Err(gone());
        }
        let fd = crate::sys::pidfd_open(nix::unistd::Pid::from_raw(self.pid))?;
        match start_time(self.pid) {
            Ok(t) if t == self.started => Ok(fd),
            _ => Err(gone()),
        }
    }

    /// The record in `path`, if there is a readable one.
    pub fn read(path: &Path) -> Option<KeeperRecord> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes the record to `path` whole (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_line())?;
        std::fs::rename(&tmp, path)
    }

    /// The record as one JSON line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record a helper printed; one of another format is refused
    /// (the helper and the plugin come from different releases).
    pub fn from_line(line: &[u8]) -> Result<KeeperRecord, String> {
        let record: KeeperRecord = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if record.format != RECORD_FORMAT {
            return Err(format!(
                "it writes keeper records of format {}, this plugin reads format {RECORD_FORMAT}: \
                 install berth and its SPANK plugin from the same release",
                record.format
            ));
        }
        Ok(record)
    }

    /// The seccomp program, decoded.
    pub fn seccomp_program(&self) -> Result<Option<Vec<u8>>, String> {
        self.seccomp
            .as_deref()
            .map(|h| {
                hex::decode(h).map_err(|e| format!("bad seccomp program in the keeper record: {e}"))
            })
            .transpose()
    }

    /// A later step's record for a named container: this container's
    /// files, environment and image with the step's own keeper (`view`,
    /// which holds the step's mount namespace), devices, cgroups and task
    /// rules (working directory, remap-root, job variables). The
    /// earlier step's device variables are not the step's.
    pub fn seen_from(&self, view: &KeeperRecord, step: u32) -> KeeperRecord {
        let earlier_device_names: Vec<&str> = self
            .device_env
            .iter()
            .filter_map(|e| e.split('=').next())
            .collect();
        KeeperRecord {
            pid: view.pid,
            started: view.started,
            env: self
                .env
                .iter()
                .filter(|e| {
                    !earlier_device_names.contains(&e.split('=').next().unwrap_or_default())
                })
                .cloned()
                .collect(),
            device_env: view.device_env.clone(),
            cgroup_dirs: view.cgroup_dirs.clone(),
            workdir: view.workdir.clone(),
            remap_root: view.remap_root,
            job_env: view.job_env.clone(),
            step: Some(step),
            pid_namespace: Some(self.pid_namespace.unwrap_or((self.pid, self.started))),
            // The entrypoint runs again for this step.
            entrypoint_env: None,
            entrypoint_workdir: None,
            entrypoint_failed: None,
            ..self.clone()
        }
    }
}

/// What ending a container found: problems to report, none fatal.
#[derive(Debug, Default)]
pub struct Ended {
    /// Processes the kernel killed at the container's memory limit.
    pub oom_kills: u64,
    /// Cgroup directories that could not be removed, and why.
    pub cgroup_errors: Vec<(PathBuf, io::Error)>,
}

impl KeeperRecord {
    /// Ends the container: its keeper (if it is still the one recorded),
    /// then its cgroup, with whatever is still in it (a task orphaned by a
    /// killed slurmstepd; removed once gone, up to 2 s).
    pub fn end(&self) -> Ended {
        self.kill_keeper();
        let dirs: Vec<&PathBuf> = self
            .cgroup_dirs
            .iter()
            .filter(|d| d.starts_with("/sys/fs/cgroup"))
            .collect();
        let mut ended = Ended {
            oom_kills: dirs
                .iter()
                .map(|d| crate::limits::cgroup::oom_kills_in(d))
                .sum(),
            ..Default::default()
        };
        for dir in dirs {
            if let Err(e) = crate::limits::cgroup::remove_dir_killing(dir) {
                ended.cgroup_errors.push((dir.clone(), e));
            }
        }
        ended
    }

    /// How long ago its keeper started (None when the clock cannot be read).
    pub fn running_for(&self) -> Option<std::time::Duration> {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100)
            .max(1) as u64;
        let uptime_ms = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map(|s| (s * 1000.0) as u64)?;
        Some(std::time::Duration::from_millis(
            uptime_ms.saturating_sub(self.started * 1000 / ticks),
        ))
    }

    /// Kills the keeper through a pidfd taken and checked to be the
    /// recorded process (a reused pid is never signalled), and waits up to
    /// 2 s for it to go (its cgroup can then be removed).
    fn kill_keeper(&self) {
        use std::os::fd::AsFd;
        let Ok(fd) = self.pidfd() else { return };
        let _ = crate::sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16));
    }
}

/// Process `pid`'s start time (clock ticks after boot); an error once it
/// has ended, also while it waits to be reaped (a zombie).
fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    if matches!(fields.first(), Some(&"Z" | &"X")) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the process has ended",
        ));
    }
    fields
        .get(19)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_its_file_and_names_a_live_process_only_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut record = KeeperRecord::of_keeper(child.id() as i32).unwrap();
        record.env = vec!["PATH=/bin".into()];
        record.cgroup_dirs = vec!["/sys/fs/cgroup/x".into()];
        let path = dir.path().join("keeper.json");
        record.write(&path).unwrap();
        let read = KeeperRecord::read(&path).unwrap();
        assert_eq!(read, record);
        assert!(read.is_alive());
        // Another start time: a reused pid.
        let other = KeeperRecord {
            started: record.started + 1,
            ..record.clone()
        };
        assert!(!other.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!read.is_alive());
        assert!(!KeeperRecord::default().is_alive());
    }

    #[test]
    fn a_view_keeps_the_containers_files_and_takes_the_steps_devices() {
        let named = KeeperRecord {
            pid: 10,
            started: 1,
            image: "sha256:abc".into(),
            env: vec!["PATH=/bin".into(), "CUDA_VISIBLE_DEVICES=0".into()],
            device_env: vec!["CUDA_VISIBLE_DEVICES=0".into()],
            entrypoint: vec!["/entry".into()],
            cgroup_dirs: vec!["/sys/fs/cgroup/a".into()],
            workdir: Some("/first".into()),
            remap_root: true,
            job_env: vec!["FIRST".into()],
            step: Some(0),
            ..Default::default()
        };
        let view = KeeperRecord {
            pid: 20,
            started: 2,
            device_env: vec!["CUDA_VISIBLE_DEVICES=0,1".into()],
            cgroup_dirs: vec!["/sys/fs/cgroup/b".into()],
            job_env: vec!["LATER".into()],
            ..Default::default()
        };
        let seen = named.seen_from(&view, 3);
        assert_eq!((seen.pid, seen.started, seen.step), (20, 2, Some(3)));
        assert_eq!(seen.env, ["PATH=/bin"]);
        assert_eq!(seen.device_env, view.device_env);
        assert_eq!(seen.cgroup_dirs, view.cgroup_dirs);
        // The task rules are the later step's own.
        assert_eq!(
            (&seen.workdir, seen.remap_root, &seen.job_env),
            (&None, false, &view.job_env)
        );
        assert_eq!(
            (seen.image.as_str(), &seen.entrypoint),
            ("sha256:abc", &named.entrypoint)
        );
    }

    /// A pid the keeper no longer holds (another start time) gives no
    /// pidfd: nobody setns into whatever took the number.
    #[test]
    fn a_pidfd_is_only_of_the_recorded_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let record = KeeperRecord::of_keeper(child.id() as i32).unwrap();
        assert!(record.pidfd().is_ok());
        let reused = KeeperRecord {
            started: record.started + 1,
            ..record.clone()
        };
        assert!(reused.pidfd().is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(record.pidfd().is_err());
    }

    #[test]
    fn a_helpers_line_parses_with_fields_missing() {
        let record =
            KeeperRecord::from_line(br#"{"format":3,"pid":5,"started":7,"device_env":[]}"#)
                .unwrap();
        assert_eq!((record.pid, record.started), (5, 7));
        assert!(record.env.is_empty() && record.seccomp.is_none());
    }

    /// An older berth wrote `workdir` as the image's directory and knew no
    /// `remap_root`: its answer must not be misread.
    #[test]
    fn a_record_of_another_format_is_refused_by_name() {
        let e = KeeperRecord::from_line(br#"{"pid":5,"started":7,"workdir":"/"}"#).unwrap_err();
        assert!(e.contains("format 0") && e.contains("same release"), "{e}");
        let line = KeeperRecord {
            format: RECORD_FORMAT,
            ..Default::default()
        }
        .to_line();
        assert!(KeeperRecord::from_line(line.as_bytes()).is_ok());
    }
}
