//! A real Slurm cluster on localhost for the tests: munged, slurmctld and
//! slurmd from Debian's packages, with their own config dir, ports and
//! state, and spank_berth.so in plugstack.conf. Dropping it stops the daemons.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::releases::{Release, RootNamespace};
use crate::{berth_path, stderr, test_user};

mod checks;
mod cleanup;
mod nodes;
pub use checks::*;
pub use nodes::{node_store, Node};

/// A running cluster of one node (or several: [`Cluster::start_nodes`]).
pub struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
    /// The (first) node's name.
    pub node: String,
    /// Its nodes, when it has several (each slurmd in namespaces of its
    /// own: see nodes.rs).
    pub nodes: Vec<Node>,
    /// The Slurm release it runs.
    pub release: Release,
    /// How Slurm tracks its steps' processes.
    pub tracking: Tracking,
    /// Where a release other than the host's runs (its own munged too).
    root: Option<RootNamespace>,
    /// The plugin's runtime directory (host path).
    runtime_dir: PathBuf,
}

/// How Slurm tracks (and signals) a step's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// proctrack/linuxproc: the task's process tree; no cgroups.
    LinuxProc,
    /// proctrack/pgid: the task's process group; no cgroups.
    Pgid,
    /// proctrack/cgroup and task/cgroup (ConstrainDevices, ConstrainRAMSpace).
    Cgroup,
}

/// How the plugin is set up on the test node.
pub enum Plugstack<'a> {
    /// The cluster's own plugstack.conf: the build's plugin for the release,
    /// the build's `berth`, berth's config `berth_config`, the runtime
    /// directory in the cluster's `run/`.
    Own {
        /// berth.toml for the plugin.
        berth_config: &'a Path,
    },
    /// What the packages installed in the root: Slurm's default
    /// plugstack.conf, which includes plugstack.conf.d, and berth's defaults.
    Installed,
}

/// spank_berth.so built beside the tests.
pub fn plugin_path() -> PathBuf {
    let p = berth_path().with_file_name("libspank_berth.so");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p spank-berth` first (the test script does)",
        p.display()
    );
    p
}

fn munge_works() -> bool {
    Command::new("munge")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts munged once for all the tests of this binary: tests run on
/// threads, and two that start it at once would see one of them fail to
/// take the socket lock.
fn ensure_munged() {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if munge_works() {
        return;
    }
    let _ = Command::new("install")
        .args([
            "-d",
            "-o",
            "munge",
            "-g",
            "munge",
            "-m",
            "755",
            "/run/munge",
        ])
        .status();
    let status = Command::new("runuser")
        .args(["-u", "munge", "--", "/usr/sbin/munged"])
        .status()
        .expect("munged missing: apt-get install munge");
    // A munged started by another process may hold the lock and still be
    // coming up: what counts is that munge works.
    let up = status.success()
        || (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            munge_works()
        });
    assert!(up, "munged did not start");
}

impl Cluster {
    /// Runs `sbatch --wait` of a script made of `body` (its `#SBATCH` lines
    /// first) as the test user, with the job's output in `dir/out.txt`;
    /// asserts it succeeded and returns that output.
    pub fn batch(&self, dir: &Path, body: &str) -> String {
        let script = dir.join("job.sh");
        let output = dir.join("out.txt");
        std::fs::write(
            &script,
            format!("#!/bin/sh\n#SBATCH --output={}\n{body}", output.display()),
        )
        .unwrap();
        let out = self
            .as_user("sbatch", &["--wait", script.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\n{}", stderr(&out), self.logs());
        // Without srun's notes about waiting for the node (a step may wait
        // while the previous one ends, on a busy machine).
        std::fs::read_to_string(output)
            .unwrap()
            .lines()
            .filter(|l| {
                !(l.starts_with("srun: Job ") && l.contains("step creation temporarily disabled")
                    || l.starts_with("srun: Step created for job "))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Asserts the node comes back idle (never drained or down) after `after`.
    pub fn assert_node_stays_up(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.node_state();
            assert!(
                !state.contains("drain") && !state.contains("down"),
                "the node is {state} after {after}:\n{}",
                self.logs()
            );
            if self.all_idle() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node stayed {state} after {after}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts one, with berth's config `berth_config` for the plugin.
    pub fn start(berth_config: &Path) -> Cluster {
        Cluster::start_with(berth_config, false)
    }

    /// Starts one; with `cgroups`, Slurm tracks and confines steps with its
    /// cgroup plugins (proctrack/cgroup, task/cgroup, ConstrainDevices).
    pub fn start_with(berth_config: &Path, cgroups: bool) -> Cluster {
        let tracking = match cgroups {
            true => Tracking::Cgroup,
            false => Tracking::LinuxProc,
        };
        Cluster::start_tracking(berth_config, tracking)
    }

    /// Starts one on the host whose steps Slurm tracks as `tracking` says.
    pub fn start_tracking(berth_config: &Path, tracking: Tracking) -> Cluster {
        Cluster::start_in(
            None,
            Release::Host,
            Plugstack::Own { berth_config },
            tracking,
        )
    }

    /// Starts one of `release`.
    pub fn start_release(berth_config: &Path, release: Release) -> Cluster {
        let root = release.root();
        Cluster::start_in(
            root.as_deref(),
            release,
            Plugstack::Own { berth_config },
            Tracking::LinuxProc,
        )
    }

    /// Starts one of `count` nodes on the host (2 or 3; see nodes.rs),
    /// whose steps Slurm tracks as `tracking` says (not with cgroups: the
    /// nodes share the host's cgroup tree).
    pub fn start_nodes(berth_config: &Path, count: usize, tracking: Tracking) -> Cluster {
        assert!(count > 1 && tracking != Tracking::Cgroup);
        Cluster::start_cluster(
            None,
            Release::Host,
            Plugstack::Own { berth_config },
            tracking,
            count,
        )
    }

    /// Starts one on the host or in `root` (a root of `release`), with the
    /// plugin set up as `plugstack` says.
    pub fn start_in(
        root: Option<&Path>,
        release: Release,
        plugstack: Plugstack,
        tracking: Tracking,
    ) -> Cluster {
        Cluster::start_cluster(root, release, plugstack, tracking, 1)
    }

    fn start_cluster(
        root: Option<&Path>,
        release: Release,
        plugstack: Plugstack,
        tracking: Tracking,
        count: usize,
    ) -> Cluster {
        let cgroups = tracking == Tracking::Cgroup;
        let memory = if cgroups { " RealMemory=2048" } else { "" };
        assert!(
            count == 1 || (root.is_none() && matches!(plugstack, Plugstack::Own { .. })),
            "several nodes run on the host's Slurm with the cluster's own plugstack"
        );
        assert!(
            !cgroups || root.is_none(),
            "Slurm's cgroup plugins are only tested on the host"
        );
        let runtime_dir = match (&plugstack, root) {
            (Plugstack::Installed, Some(root)) => root.join("run/berth"),
            (Plugstack::Installed, None) => panic!("installed packages are tested in a root"),
            (Plugstack::Own { .. }, _) => PathBuf::new(), // the cluster's run/, below
        };
        let root = root.map(RootNamespace::enter);
        if root.is_none() {
            ensure_munged();
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-slurm-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let d = dir.path();
        for sub in ["state", "spool", "log", "run"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        // Two fake GPUs (NVIDIA's major 195; no driver behind them) for gres.
        let gpu_dir = d.join("dev");
        crate::make_char_devices(
            &gpu_dir,
            &[
                ("nvidia0", 195, 0),
                ("nvidia1", 195, 1),
                ("nvidia2", 195, 2),
                ("nvidia3", 195, 3),
                ("nvidia4", 195, 4),
                ("nvidia5", 195, 5),
                ("nvidia6", 195, 6),
                ("nvidia7", 195, 7),
                ("nvidiactl", 195, 255),
            ],
        );
        let [ctld_port, slurmd_port, node_ports @ ..] = crate::free_ports::<5>();
        let nodes = match count {
            1 => vec![],
            _ => nodes::nodes(count, &node_ports),
        };
        // This node's two (each node's), and another node's two (which a
        // forged node name must not reach).
        let gres = match count {
            1 => format!(
                "NodeName=berthnode Name=gpu File={}/nvidia[0-1]\n",
                gpu_dir.display()
            ),
            _ => nodes::gres_lines(&nodes, &gpu_dir),
        };
        std::fs::write(
            d.join("gres.conf"),
            format!(
                "AutoDetect=off\n{gres}NodeName=othernode Name=gpu File={}/nvidia[6-7]\n",
                gpu_dir.display()
            ),
        )
        .unwrap();
        let node = nodes
            .first()
            .map_or_else(|| "berthnode".to_string(), |n| n.name.clone());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        // A root's Slurm talks to a munged of its own (its own version), whose
        // socket the config names; 24.11 renamed CryptoType to CredType.
        let socket = match &root {
            None => String::new(),
            Some(ns) => {
                start_own_munged(ns, &d.join("munge"));
                format!("AuthInfo=socket={}\n", d.join("munge/munge.sock").display())
            }
        };
        let cred = match release {
            Release::Host => "CryptoType=crypto/munge",
            _ => "CredType=cred/munge",
        };
        let auth = format!("AuthType=auth/munge\n{socket}{cred}");
        // The packages' plugstack.conf.d is read through Debian's
        // /etc/slurm/plugstack.conf (the default beside a slurm.conf in
        // /etc/slurm; this one is elsewhere); the tests' own names its file.
        let plugstack_line = match plugstack {
            Plugstack::Installed => "PlugStackConfig=/etc/slurm/plugstack.conf\n".to_string(),
            Plugstack::Own { .. } => format!("PlugStackConfig={}/plugstack.conf\n", d.display()),
        };
        let conf = format!(
            "ClusterName=berthtest\nSlurmctldHost=localhost(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={}\nSlurmdPort={}\nStateSaveLocation={d}/state\n{daemon_files}\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmctldLogFile={d}/log/slurmctld.log\n\
             {auth}\n{tracking}\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\nMpiDefault=none\n\
             SchedulerType=sched/backfill\nJobCompType=jobcomp/none\n{plugstack_line}\
             KillWait=2\nInactiveLimit=0\nGresTypes=gpu\n\
             {node_lines}\
             PartitionName=debug Nodes={partition} Default=YES MaxTime=INFINITE State=UP\n",
            ctld_port,
            slurmd_port,
            d = d.display(),
            daemon_files = match count {
                1 => format!(
                    "SlurmdSpoolDir={d}/spool\nSlurmdPidFile={d}/slurmd.pid\nSlurmdLogFile={d}/log/slurmd.log\n",
                    d = d.display()
                ),
                _ => nodes::daemon_files(d),
            },
            node_lines = match count {
                1 => format!(
                    "NodeName={node} NodeHostname={} NodeAddr=127.0.0.1 CPUs={cpus}{memory} Gres=gpu:2 State=UNKNOWN\n",
                    nix_hostname()
                ),
                _ => nodes::node_lines(&nodes, cpus, memory),
            },
            partition = match count {
                1 => node.clone(),
                _ => nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(","),
            },
            tracking = match tracking {
                Tracking::Cgroup => "ProctrackType=proctrack/cgroup\nTaskPlugin=task/cgroup",
                Tracking::LinuxProc => "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none",
                Tracking::Pgid => "ProctrackType=proctrack/pgid\nTaskPlugin=task/none",
            },
        );
        if cgroups {
            std::fs::write(
                d.join("cgroup.conf"),
                "CgroupPlugin=autodetect\nConstrainDevices=yes\nConstrainCores=no\nConstrainRAMSpace=yes\n",
            )
            .unwrap();
        } else if release != Release::Host {
            // Newer releases look for a cgroup plugin even when nothing uses it.
            std::fs::write(d.join("cgroup.conf"), "CgroupPlugin=disabled\n").unwrap();
        }
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let node_config = match &plugstack {
            Plugstack::Own { berth_config } => berth_config.to_path_buf(),
            Plugstack::Installed => PathBuf::new(),
        };
        let runtime_dir = match plugstack {
            Plugstack::Installed => runtime_dir,
            Plugstack::Own { berth_config } => {
                std::fs::write(
                    d.join("plugstack.conf"),
                    format!(
                        "required {} config={} berth={} runtime_dir={}\n",
                        release.plugin().display(),
                        berth_config.display(),
                        berth_path().display(),
                        d.join("run").display()
                    ),
                )
                .unwrap();
                d.join("run")
            }
        };
        let conf = d.join("slurm.conf");
        let spawn = |program: &str, args: &[&str]| {
            command_in(root.as_ref(), program, None)
                .args(args)
                .arg("-f")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("{program} missing ({e}): apt-get install slurmctld slurmd")
                })
        };
        let mut daemons = vec![spawn("slurmctld", &["-D", "-i"])];
        match count {
            1 => daemons.push(spawn("slurmd", &["-D", "-N", &node])),
            _ => daemons.extend(
                nodes
                    .iter()
                    .map(|n| nodes::spawn_slurmd(d, n, &conf, &node_config)),
            ),
        }
        let cluster = Cluster {
            dir,
            daemons,
            node: node.clone(),
            nodes,
            release,
            tracking,
            root,
            runtime_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.node_state().lines().all(|s| s == "idle") || cluster.node_state().is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "the test cluster did not come up:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The cluster's directory (config, logs, runtime dir `run/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `SLURM_CONF` for clients.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// Whether every node is idle.
    pub fn all_idle(&self) -> bool {
        let state = self.node_state();
        !state.is_empty() && state.lines().all(|s| s == "idle")
    }

    /// The node's state as sinfo shows it (`idle`, `drained`, ...; a line
    /// per node).
    pub fn node_state(&self) -> String {
        let out = self
            .command("sinfo")
            .args(["-h", "-N", "-o", "%T"])
            .env("SLURM_CONF", self.conf())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// A Slurm client command (`srun`, `sbatch`, ...) as the unprivileged test user.
    pub fn as_user(&self, program: &str, args: &[&str]) -> Command {
        let mut c = command_in(self.root.as_ref(), program, Some(test_user()));
        // The user's own HOME, as a login gives them (the job takes it).
        c.args(args)
            .env("HOME", crate::test_user_home())
            .env("SLURM_CONF", self.conf())
            .stdin(Stdio::null());
        c
    }

    /// A Slurm command (`sinfo`, `scancel`, ...) of this cluster's release, as root.
    pub fn command(&self, program: &str) -> Command {
        let mut c = command_in(self.root.as_ref(), program, None);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// Runs `srun ARGS` as the test user.
    pub fn srun(&self, args: &[&str]) -> Output {
        self.as_user("srun", args).output().unwrap()
    }

    /// Runs `scancel ARGS` as root; whether it succeeded.
    pub fn scancel(&self, args: &[&str]) -> bool {
        self.command("scancel")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts `srun ARGS` as the test user in the background, its output
    /// dropped (a step a test works against while it runs).
    pub fn srun_in_background(&self, args: &[&str]) -> Child {
        self.as_user("srun", args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The pid of this cluster's slurmstepd whose process title starts
    /// with `title` (`slurmstepd: [12.0]`); other tests' clusters may have
    /// the same job ids: told apart by their SLURM_CONF.
    pub fn stepd(&self, title: &str) -> Option<i32> {
        let conf = self.conf().display().to_string();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).starts_with(title)
                    && String::from_utf8_lossy(&environ).contains(&conf)
            })
    }

    /// Starts `srun` of `sleep 300` as the test user in a job called `name`.
    pub fn sleeping_step(&self, name: &str, extra: &[&str]) -> Child {
        let mut args = vec!["-J", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["sleep", "300"]);
        self.as_user("srun", &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Adds `key=value` arguments to the plugin's line in the cluster's own
    /// plugstack.conf (read by each new srun and step).
    pub fn add_plugstack_args(&self, args: &str) {
        let path = self.dir.path().join("plugstack.conf");
        let text = std::fs::read_to_string(&path).expect("the cluster's own plugstack.conf");
        std::fs::write(&path, format!("{} {args}\n", text.trim_end())).unwrap();
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let slurmds = match self.nodes.is_empty() {
            true => vec!["slurmd.log".to_string()],
            false => self
                .nodes
                .iter()
                .map(|n| format!("slurmd-{}.log", n.name))
                .collect(),
        };
        std::iter::once("slurmctld.log".to_string())
            .chain(slurmds)
            .map(|f| {
                std::fs::read_to_string(self.dir.path().join("log").join(f)).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Node `node`'s runtime directory (of several nodes; see nodes.rs).
    pub fn node_runtime_dir(&self, node: &str) -> PathBuf {
        nodes::node_dir(self.dir(), node).join("run")
    }

    /// What node `node` sees at `<cluster>/local` (of several nodes), and
    /// that common path.
    pub fn node_local(&self, node: &str) -> (PathBuf, PathBuf) {
        (
            nodes::node_dir(self.dir(), node).join("local"),
            self.dir().join("local"),
        )
    }
}

/// `program` of the host's Slurm, or run in a release's root; from /tmp,
/// as `user` (uid, gid) or root.
fn command_in(root: Option<&RootNamespace>, program: &str, user: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    match (root, user) {
        (Some(ns), user) => ns.command_as(program, user),
        (None, user) => {
            let mut c = Command::new(program);
            c.current_dir("/tmp");
            if let Some((uid, gid)) = user {
                c.uid(uid).gid(gid);
            }
            c
        }
    }
}

/// Starts the root's own munged with a fresh key, its socket in `dir`.
fn start_own_munged(ns: &RootNamespace, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.join("munge.key");
    let mut bytes = vec![0u8; 1024];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    std::fs::write(&key, bytes).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let out = ns
        .command("munged")
        .arg(format!("--socket={}", path("munge.sock")))
        .arg(format!("--key-file={}", path("munge.key")))
        .arg(format!("--pid-file={}", path("munged.pid")))
        .arg(format!("--log-file={}", path("munged.log")))
        .arg(format!("--seed-file={}", path("munged.seed")))
        .arg("--force")
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "munged in the root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ends the munged `start_own_munged` started (it runs in the background).
fn stop_own_munged(dir: &Path) {
    if let Some(pid) = std::fs::read_to_string(dir.join("munged.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
