//! What a test cluster leaves when it is dropped: its daemons, its
//! slurmstepd processes whose steps a test abandoned, and the containers
//! the plugin left when a test failed before the job's epilog.

use std::time::Duration;

use super::{stop_own_munged, Cluster};
use crate::test_user;

impl Drop for Cluster {
    fn drop(&mut self) {
        self.scancel(&["--full", "-u", "root"]);
        let (uid, _) = test_user();
        self.scancel(&["-u", &uid.to_string()]);
        for d in self.daemons.iter_mut().rev() {
            let _ = d.kill();
            let _ = d.wait();
        }
        if self.root.is_some() {
            stop_own_munged(&self.dir().join("munge"));
        }
        // slurmstepd processes of this cluster die with their steps; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
        self.kill_stray_stepds();
        self.sweep_containers();
    }
}

impl Cluster {
    /// Kills this cluster's slurmstepd processes still there once its
    /// daemons are gone (a step whose srun a test killed: its slurmstepd
    /// waits for ever to report to a slurmctld that no longer runs). Told
    /// from other clusters' by the `SLURM_CONF` in their environment.
    fn kill_stray_stepds(&self) {
        let conf = format!("SLURM_CONF={}", self.conf().display());
        let pids = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let ours = environ.split(|b| *b == 0).any(|v| v == conf.as_bytes());
            if cmdline.starts_with(b"slurmstepd") && ours {
                // SAFETY: kill on the pid of this cluster's own slurmstepd.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Cluster {
    /// Ends what the plugin left when a test failed before the job's
    /// epilog ran (a named container's keeper, its cgroup): the plugin's
    /// own record of each is in the runtime dir.
    fn sweep_containers(&self) {
        self.sweep_kept_containers();
        let Ok(entries) = std::fs::read_dir(self.runtime_dir.join("slurm")) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(reply) = std::fs::read(entry.path().join("keeper.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            else {
                continue;
            };
            if let Some(pid) = reply["pid"].as_i64() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains("slurm-") {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            for dir in reply["cgroup_dirs"].as_array().into_iter().flatten() {
                if let Some(dir) = dir.as_str().filter(|d| d.starts_with("/sys/fs/cgroup/")) {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }

    /// Ends the base keepers of this cluster's kept (named) containers
    /// still running: the last job's epilog stops them, but a test may end
    /// (and this cluster's daemons go) first. Told apart from other
    /// clusters' by their berth.toml, named in their command line; their
    /// cgroups (listed in the store's records) are removed once they are
    /// gone. The mounts go with their mount namespace.
    fn sweep_kept_containers(&self) {
        let Ok(plugstack) = std::fs::read_to_string(self.dir().join("plugstack.conf")) else {
            return;
        };
        let Some(config) = plugstack
            .split_whitespace()
            .find_map(|w| w.strip_prefix("config="))
            .map(std::path::PathBuf::from)
        else {
            return;
        };
        let Some(sandbox) = config.parent() else {
            return;
        };
        let needle = format!("--config-if-present\0{}", config.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("\0slurm-start\0") && cmdline.contains(&needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let stores = std::fs::read_dir(sandbox).into_iter().flatten().flatten();
        for store in stores.filter(|e| e.file_name().to_string_lossy().starts_with("store")) {
            let users = std::fs::read_dir(store.path().join("containers"));
            for container in users
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|u| std::fs::read_dir(u.path()).into_iter().flatten().flatten())
            {
                let Some(record) = std::fs::read(container.path().join("keeper.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                else {
                    continue;
                };
                for dir in record["cgroup_dirs"].as_array().into_iter().flatten() {
                    if let Some(dir) = dir.as_str().filter(|d| d.starts_with("/sys/fs/cgroup/")) {
                        let _ = std::fs::remove_dir(dir);
                    }
                }
            }
        }
    }
}
