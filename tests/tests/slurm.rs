//! The SPANK plugin on a real Slurm cluster (munged, slurmctld, slurmd on
//! localhost), driven as an unprivileged user with srun and sbatch.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::slurm::Cluster;
use berth_e2e::*;

fn setup() -> (Sandbox, Cluster, String) {
    let s = Sandbox::new();
    let image = s.standard_image().to_str().unwrap().to_string();
    let cluster = Cluster::start(&s.config());
    (s, cluster, image)
}

/// Command lines of the container keepers started with this sandbox's config.
fn keeper_cmdlines(s: &Sandbox) -> Vec<String> {
    let needle = s.config().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| {
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ")
        })
        .filter(|text| text.contains("slurm-start") && text.contains(&needle))
        .collect()
}

fn keepers_of(s: &Sandbox) -> usize {
    keeper_cmdlines(s).len()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_task_runs_in_the_container_as_the_user() {
    require_root!();
    let (_s, cluster, image) = setup();
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[&image_opt, "sh", "-c", "cat /etc/motd; id -u; echo $FROM_IMAGE $PATH; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; test -e /home && echo HOST-HOME; true"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let (uid, _) = test_user();
    assert!(
        text.starts_with(&format!("layer2\n{uid}\nyes /bin\n")),
        "{text}"
    );
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    assert!(!text.contains("HOST-HOME"), "{text}");
    // Without the option, tasks run on the host as usual.
    let out = cluster.srun(&[
        "sh",
        "-c",
        "grep -c layer2 /etc/motd 2>/dev/null || echo host",
    ]);
    let text = stdout(&out);
    assert!(text.contains("host") || text.trim() == "0", "{text}");
}

#[test]
fn tasks_of_a_step_share_one_container() {
    require_root!();
    let (_s, cluster, image) = setup();
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&["-n4", "-O", &image_opt, "sh", "-c", "touch /dev/shm/task$SLURM_PROCID; for i in $(seq 200); do [ $(ls /dev/shm | wc -l) -ge 4 ] && break; sleep 0.05; done; sleep 0.2; echo $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/ipc) $(ls /dev/shm | wc -l)"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines.iter().all(|l| *l == lines[0]),
        "tasks in different containers: {lines:?}"
    );
    assert!(lines[0].ends_with(" 4"), "/dev/shm not shared: {lines:?}");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert!(!lines[0].contains(host_mnt.to_str().unwrap()), "{lines:?}");
}

#[test]
fn the_batch_script_runs_in_the_container() {
    require_root!();
    let (s, cluster, image) = setup();
    let out_dir = shared_dir(&s, "batch");
    let script = out_dir.join("job.sh");
    std::fs::write(&script, format!("#!/bin/sh\n#SBATCH --container-image={image}\n#SBATCH --output={}/out.txt\ncat /etc/motd\necho FROM_IMAGE=$FROM_IMAGE\necho inherited=$BERTH_CONTAINER_IMAGE\n", out_dir.display())).unwrap();
    let out = cluster
        .as_user("sbatch", &["--wait", script.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = std::fs::read_to_string(out_dir.join("out.txt")).unwrap();
    assert!(text.contains("layer2\nFROM_IMAGE=yes\n"), "{text}");
    // srun steps of the script would inherit the container through the environment.
    assert!(text.contains(&format!("inherited={image}\n")), "{text}");
}

#[test]
fn environment_precedence() {
    require_root!();
    let (_s, cluster, image) = setup();
    let image_opt = format!("--container-image={image}");
    let script = "echo $FROM_IMAGE $PATH ${SLURM_JOB_ID:+has-job-id}";
    let out = cluster
        .as_user("srun", &[&image_opt, "sh", "-c", script])
        .env("FROM_IMAGE", "from-job")
        .env("PATH", "/job/bin:/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "yes /bin has-job-id\n", "{}", stderr(&out));
    let out = cluster
        .as_user(
            "srun",
            &[&image_opt, "--container-env=FROM_IMAGE", "sh", "-c", script],
        )
        .env("FROM_IMAGE", "from-job")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "from-job /bin has-job-id\n",
        "{}",
        stderr(&out)
    );
    // The environment variable form of the option.
    let out = cluster
        .as_user("srun", &["cat", "/etc/motd"])
        .env("BERTH_CONTAINER_IMAGE", &image)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "layer2\n", "{}", stderr(&out));
}

/// The node goes back to idle (a step finishing may show it busy for a
/// moment) and is never drained.
fn assert_node_stays_up(cluster: &Cluster, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = cluster.node_state();
        assert!(
            !state.contains("drain") && !state.contains("down"),
            "the node is {state} after {after}:\n{}",
            cluster.logs()
        );
        if state == "idle" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node stayed {state} after {after}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failures_fail_the_tasks_with_one_line_and_never_drain_the_node() {
    require_root!();
    let (s, cluster, image) = setup();
    let port = free_port();
    let unreachable = format!("--container-image=127.0.0.1:{port}/no/such:v1");
    let missing_mount = format!(
        "--container-mounts={}/no-such-dir:/data",
        s.path().display()
    );
    let image_opt = format!("--container-image={image}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&unreachable, "true"], "cannot reach registry"),
        (
            vec!["--container-image=/no/such/image.sqsh", "true"],
            "not found",
        ),
        (vec![&image_opt, &missing_mount, "true"], "does not exist"),
        (vec![&image_opt, "no-such-command"], "no-such-command"),
    ];
    for (args, expected) in cases {
        let out = cluster.srun(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("berth: ") || expected == "no-such-command",
            "{args:?}: {err}"
        );
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_node_stays_up(&cluster, &format!("{args:?}"));
    }
    // A bad option is refused by srun itself: nothing is queued.
    let out = cluster.srun(&[&image_opt, "--container-mounts=/a:relative", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--container-mounts"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("queued"), "{}", stderr(&out));
    let out = cluster
        .as_user(
            "sbatch",
            &["--container-workdir=relative", "--wrap", "true"],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--container-workdir"),
        "{}",
        stderr(&out)
    );
    assert_node_stays_up(&cluster, "bad options");
    // Nothing is left behind by any of it.
    wait_until("keepers are gone", || keepers_of(&s) == 0);
    assert_eq!(count_entries(&cluster.dir().join("run/slurm")), 0);
}

#[test]
fn scancel_and_a_killed_slurmstepd_leave_nothing_behind() {
    require_root!();
    let (s, cluster, image) = setup();
    let image_opt = format!("--container-image={image}");
    // scancel of a running step.
    let mut srun = cluster.sleeping_step("berth-scancel", &[&image_opt]);
    wait_until("the container runs", || keepers_of(&s) == 1);
    assert!(cluster.scancel(&["-n", "berth-scancel"]));
    let _ = srun.wait();
    wait_until("the keeper is gone after scancel", || keepers_of(&s) == 0);
    wait_until("the step's state is removed", || {
        count_entries(&cluster.dir().join("run/slurm")) == 0
    });
    // SIGKILL of the step's slurmstepd: the keeper notices and exits.
    let mut srun = cluster.sleeping_step("berth-kill9", &[&image_opt]);
    wait_until("the container runs", || keepers_of(&s) == 1);
    // The keeper watches the step's slurmstepd: its --watch-pid names it.
    let stepd = keeper_cmdlines(&s).iter().find_map(|cmd| {
        let words: Vec<&str> = cmd.split(' ').collect();
        words
            .iter()
            .position(|w| *w == "--watch-pid")
            .and_then(|i| words.get(i + 1))
            .and_then(|p| p.parse::<i32>().ok())
    });
    let pid = stepd.expect("the keeper names the slurmstepd it watches");
    // SAFETY: kill on the pid of this test's slurmstepd.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until("the keeper is gone after slurmstepd was killed", || {
        keepers_of(&s) == 0
    });
    cluster.scancel(&["-n", "berth-kill9"]);
    let _ = srun.kill();
    let _ = srun.wait();
    wait_until("no keeper is left", || keepers_of(&s) == 0);
}

#[test]
fn srun_help_lists_the_options() {
    require_root!();
    let (_s, cluster, _image) = setup();
    let out = cluster.srun(&["--help"]);
    let help = stdout(&out);
    for option in [
        "--container-image",
        "--container-mounts",
        "--container-workdir",
        "--container-name",
        "--container-writable",
        "--container-readonly",
        "--container-remap-root",
        "--no-container-remap-root",
        "--container-mount-home",
        "--container-env",
        "--container-entrypoint",
        "--container-save",
    ] {
        assert!(help.contains(option), "{option} missing from srun --help");
    }
}

#[test]
fn a_named_container_keeps_its_files_across_the_steps_of_a_job() {
    require_root!();
    let (s, cluster, image) = setup();
    let out_dir = shared_dir(&s, "named");
    let script = out_dir.join("job.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n#SBATCH --output={out}/out.txt\n\
             srun --container-name=c1 --container-image={image} sh -c 'echo kept > /tmp/state'\n\
             srun --container-name=c1 cat /tmp/state\n\
             srun --container-name=c1:exec sh -c 'cat /tmp/state; cat /etc/motd'\n\
             srun --container-name=c2:exec true || echo no-c2\n\
             srun --container-name=c1:create --container-image={image} sh -c 'test -e /tmp/state && echo STALE || echo fresh'\n",
            out = out_dir.display()
        ),
    )
    .unwrap();
    let out = cluster
        .as_user("sbatch", &["--wait", script.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = std::fs::read_to_string(out_dir.join("out.txt")).unwrap();
    for expected in ["kept\nkept\nlayer2\n", "no-c2\n", "fresh\n"] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // The job's end (epilog) removes the named containers.
    wait_until("the named containers are gone", || keepers_of(&s) == 0);
    wait_until("the job's state is removed", || {
        count_entries(&cluster.dir().join("run/slurm")) == 0
    });
}

#[test]
fn remap_root_shows_root_inside_and_the_user_outside() {
    require_root!();
    let (s, cluster, image) = setup();
    let shared = shared_dir(&s, "remap");
    let (uid, _) = test_user();
    let image_opt = format!("--container-image={image}");
    let mount_opt = format!("--container-mounts={}:/shared", shared.display());
    let out = cluster.srun(&[&image_opt, &mount_opt, "--container-remap-root", "sh", "-c", "id -u; grep CapEff /proc/self/status; berth-probe mount_tmpfs /tmp; touch /shared/made-by-root"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), "0\nCapEff:\t00000000200405fb\nEPERM\n");
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(shared.join("made-by-root")).unwrap(),
    );
    assert_eq!(owner, uid, "outside, the file belongs to the user");
    // Without it the user stays themselves, with no capability at all.
    let out = cluster.srun(&[
        &image_opt,
        "sh",
        "-c",
        "id -u; grep CapEff /proc/self/status",
    ]);
    assert_eq!(stdout(&out), format!("{uid}\nCapEff:\t0000000000000000\n"));
}

#[test]
fn private_images_use_the_job_users_own_credentials_read_as_that_user() {
    require_root!();
    let (s, cluster, _image) = setup();
    let registry = berth_e2e::registry::Registry::start();
    registry.push(&s.standard_image(), "private/img:v1");
    let gate = berth_e2e::registry::TokenGate::start(&registry, "alice", "s3cret");
    let image_opt = format!("--container-image={}#private/img:v1", gate.host());
    let (uid, gid) = test_user();
    let home = std::path::PathBuf::from(
        String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", &format!("getent passwd {uid} | cut -d: -f6")])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    );
    let enroot_dir = home.join(".config/enroot");
    let docker_dir = home.join(".docker");
    let cleanup = || {
        let _ = std::fs::remove_file(enroot_dir.join(".credentials"));
        let _ = std::fs::remove_file(docker_dir.join("config.json"));
    };
    cleanup();
    std::fs::create_dir_all(&enroot_dir).unwrap();
    std::fs::create_dir_all(&docker_dir).unwrap();
    for dir in [home.join(".config"), enroot_dir.clone(), docker_dir.clone()] {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    // A symlink to a root-only file holding the credentials must not work:
    // the user's files are read with the user's rights.
    let secret = s.path().join("root-only-config.json");
    std::fs::write(
        &secret,
        r#"{"auths": {"HOST": {"auth": "YWxpY2U6czNjcmV0"}}}"#.replace("HOST", &gate.host()),
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, docker_dir.join("config.json")).unwrap();
    let out = cluster.srun(&[&image_opt, "true"]);
    assert!(!out.status.success(), "pulled with root's credentials");
    assert!(
        stderr(&out).contains("not authorized") || stderr(&out).contains("authentication"),
        "{}",
        stderr(&out)
    );
    // The user's own netrc works.
    let netrc = enroot_dir.join(".credentials");
    std::fs::write(
        &netrc,
        format!("machine {} login alice password s3cret\n", gate.host()),
    )
    .unwrap();
    std::os::unix::fs::chown(&netrc, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&netrc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = cluster.srun(&[&image_opt, "cat", "/etc/motd"]);
    cleanup();
    assert_eq!(stdout(&out), "layer2\n", "{}", stderr(&out));
}

#[test]
fn container_save_writes_a_squashfs_the_user_owns_and_berth_runs() {
    require_root!();
    let (s, cluster, image) = setup();
    let out_dir = shared_dir(&s, "saved");
    let (uid, _) = test_user();
    std::os::unix::fs::chown(&out_dir, Some(uid), None).unwrap();
    let saved = out_dir.join("state.sqsh");
    let image_opt = format!("--container-image={image}");
    let save_opt = format!("--container-save={}", saved.display());
    let out = cluster.srun(&[
        &image_opt,
        &save_opt,
        "sh",
        "-c",
        "echo from-the-step > /tmp/marker",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    wait_until("the squashfs is written", || saved.exists());
    let meta = std::fs::metadata(&saved).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    assert_eq!(
        ok(s.berth(&[
            "run",
            saved.to_str().unwrap(),
            "cat",
            "/tmp/marker",
            "/etc/motd"
        ])),
        "from-the-step\nlayer2\n"
    );
    // A path the user may not write is refused, and nothing is written there.
    let forbidden = s.path().join("root-only");
    std::fs::create_dir(&forbidden).unwrap();
    let save_opt = format!("--container-save={}/x.sqsh", forbidden.display());
    let out = cluster.srun(&[&image_opt, &save_opt, "true"]);
    assert!(
        stderr(&out).contains("--container-save"),
        "{}",
        stderr(&out)
    );
    assert!(!forbidden.join("x.sqsh").exists());
}

#[test]
fn container_entrypoint_runs_the_images_entrypoint_before_the_command() {
    require_root!();
    let (s, cluster, _) = setup();
    let entry = b"#!/bin/sh\necho \"entrypoint saw: $*\"\nexport SET_BY_ENTRYPOINT=yes\n[ \"$1\" = --from-image ] && shift\nexec \"$@\"\n";
    let image = s.path().join("with-entrypoint");
    write_layout(
        &image,
        vec![
            (base_layer().finish(), Compression::Gzip),
            (
                Layer::new().file("entry.sh", entry, 0o755).finish(),
                Compression::Gzip,
            ),
        ],
        &RunConfig {
            entrypoint: vec!["/entry.sh".into(), "--from-image".into()],
            ..Default::default()
        },
    );
    let image_opt = format!("--container-image={}", image.display());
    let script = "echo \"cmd: $0 $SET_BY_ENTRYPOINT ${BERTH_ARGV0:-clean}\"";
    let out = cluster.srun(&[
        &image_opt,
        "--container-entrypoint",
        "-n2",
        "sh",
        "-c",
        script,
        "arg1",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = stdout(&out);
    assert_eq!(
        text.matches("entrypoint saw: --from-image sh -c").count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("cmd: arg1 yes clean").count(), 2, "{text}");
    // It is off by default (as in pyxis), and the environment variable turns it on.
    let out = cluster.srun(&[&image_opt, "sh", "-c", "echo plain"]);
    assert_eq!(stdout(&out), "plain\n");
    let out = cluster
        .as_user("srun", &[&image_opt, "sh", "-c", "echo through-env"])
        .env("BERTH_CONTAINER_ENTRYPOINT", "1")
        .output()
        .unwrap();
    assert!(
        stdout(&out).starts_with("entrypoint saw:"),
        "{}",
        stdout(&out)
    );
    // An entrypoint the image lacks fails the task with a berth: line.
    let broken = s.path().join("broken-entrypoint");
    write_layout(
        &broken,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig {
            entrypoint: vec!["/no/such/entrypoint".into()],
            ..Default::default()
        },
    );
    let image_opt = format!("--container-image={}", broken.display());
    let out = cluster.srun(&[&image_opt, "--container-entrypoint", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("berth: cannot run the image's entrypoint /no/such/entrypoint"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_job_sees_only_the_gpus_slurm_gave_it() {
    require_root!();
    let (_s, cluster, image) = setup();
    let image_opt = format!("--container-image={image}");
    // Both jobs hold their GPU at the same time (the barrier: both files exist).
    let shared = cluster.dir().join("gpu-barrier");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mount_opt = format!("--container-mounts={}:/barrier", shared.display());
    let script = "touch /barrier/$SLURM_JOB_ID; n=0; while [ $(ls /barrier | wc -l) -lt 2 ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n+1)); done; \
                  ls /dev | grep nvidia | tr '\\n' ' '; echo CUDA=$CUDA_VISIBLE_DEVICES";
    let jobs: Vec<_> = (0..2)
        .map(|_| {
            cluster
                .as_user(
                    "srun",
                    &[
                        &image_opt,
                        &mount_opt,
                        "--gres=gpu:1",
                        "-c1",
                        "sh",
                        "-c",
                        script,
                    ],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = jobs
        .into_iter()
        .map(|j| {
            let out = j.wait_with_output().unwrap();
            assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
            stdout(&out)
        })
        .collect();
    let mut seen: Vec<&str> = outputs
        .iter()
        .map(|o| {
            assert!(o.contains("nvidiactl"), "{o}");
            assert!(o.trim_end().ends_with("CUDA=0"), "{o}");
            let gpus: Vec<&str> = o
                .split_whitespace()
                .filter(|w| w.starts_with("nvidia") && *w != "nvidiactl")
                .collect();
            assert_eq!(gpus.len(), 1, "{o}");
            gpus[0]
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["nvidia0", "nvidia1"], "{outputs:?}");
    // A step without GPUs gets no GPU device at all.
    let out = cluster.srun(&[&image_opt, "sh", "-c", "ls /dev | grep -c nvidia || true"]);
    assert_eq!(stdout(&out).trim(), "0", "{}", stderr(&out));
}

#[test]
fn steps_get_a_cgroup_with_the_partitions_limits_and_leave_none_behind() {
    require_root!();
    let s = Sandbox::new();
    let image = s.standard_image().to_str().unwrap().to_string();
    s.write_config("[limits.partitions.debug.default]\npids = 24\nmemory = \"96M\"\n");
    let cluster = Cluster::start(&s.config());
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[
        &image_opt,
        "-n2",
        "sh",
        "-c",
        "grep -E '^[0-9]+:(pids|memory):' /proc/self/cgroup; berth-probe forks 100",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = stdout(&out);
    // Both tasks are at the root of the container's cgroup namespace, and
    // its pids.max stops each fork bomb below 24.
    assert_eq!(text.matches(":pids:/\n").count(), 2, "{text}");
    let forked: Vec<usize> = text
        .lines()
        .filter_map(|l| l.strip_prefix("forked "))
        .map(|n| n.parse::<usize>().unwrap())
        .collect();
    assert!(
        forked.len() == 2 && forked.iter().all(|&n| n < 24),
        "{text}"
    );
    // The memory limit holds for the step too: the task is OOM-killed.
    let out = cluster.srun(&[&image_opt, "berth-probe", "alloc", "300"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    // srun says "Killed"; the node's log says why.
    wait_until("the OOM kill is logged", || {
        cluster
            .logs()
            .contains("berth: the container ran out of memory")
    });
    // A step's cgroup is gone with the step: seen from outside while a step
    // sleeps, then after scancel.
    let mut step = cluster.sleeping_step("cgroup-step", &[&image_opt]);
    let mut dirs = Vec::new();
    wait_until("the step's task is in a berth cgroup", || {
        dirs = task_cgroup_dirs("cgroup-step", &["pids", "memory"]);
        !dirs.is_empty()
    });
    assert!(dirs.iter().all(|d| d.exists()), "{dirs:?}");
    assert!(cluster.scancel(&["-n", "cgroup-step"]));
    let _ = step.wait();
    wait_until("the step's cgroups are removed", || {
        dirs.iter().all(|d| !d.exists())
    });
}

/// The host paths of the berth cgroups (of `controllers`) holding the
/// `sleep 300` task of the job named `job`.
fn task_cgroup_dirs(job: &str, controllers: &[&str]) -> Vec<std::path::PathBuf> {
    let (uid, _) = test_user();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let owned = std::fs::metadata(entry.path())
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if !owned
            || !cmdline.ends_with(b"sleep\x00300\x00")
            || !String::from_utf8_lossy(&environ).contains(&format!("SLURM_JOB_NAME={job}\0"))
        {
            continue;
        }
        let text = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        return text
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
                (controllers.contains(&ctrl) && path.contains("/berth_")).then(|| {
                    Path::new("/sys/fs/cgroup")
                        .join(ctrl)
                        .join(path.trim_start_matches('/'))
                })
            })
            .collect();
    }
    vec![]
}

#[test]
fn under_slurms_own_cgroups_the_container_cgroup_is_a_child_of_the_step() {
    require_root!();
    let s = Sandbox::new();
    let image = s.standard_image().to_str().unwrap().to_string();
    s.write_config("[limits.default]\nmemory = \"1G\"\n");
    let cluster = Cluster::start_with(&s.config(), true);
    let image_opt = format!("--container-image={image}");
    // Slurm confines devices here (task/cgroup, ConstrainDevices), so berth
    // adds no filter of its own: the allocated GPU opens as far as its
    // absent driver goes, the other one is refused though its node is
    // mounted in. berth's cgroup holds the memory limit.
    let mount_opt = format!(
        "--container-mounts={}:/hostdev",
        cluster.dir().join("dev").display()
    );
    let out = cluster.srun(&[
        &image_opt,
        &mount_opt,
        "--gres=gpu:1",
        "sh",
        "-c",
        "ls /dev | grep -c 'nvidia[0-9]'; n=$(ls /dev | grep 'nvidia[0-9]'); o=nvidia0; [ $n = nvidia0 ] && o=nvidia1; berth-probe open /dev/$n; berth-probe open /hostdev/$o",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), "1\nENXIO\nEPERM\n");
    // Seen from outside, the task's cgroup is berth's, inside Slurm's step.
    let mut step = cluster.sleeping_step("slurm-cgroup", &[&image_opt]);
    let mut dirs = Vec::new();
    wait_until("the step's task is in a berth cgroup", || {
        dirs = task_cgroup_dirs("slurm-cgroup", &["memory"]);
        !dirs.is_empty()
    });
    for d in &dirs {
        let parent = d
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(parent.starts_with("step_"), "{}", d.display());
    }
    assert!(cluster.scancel(&["-n", "slurm-cgroup"]));
    let _ = step.wait();
    wait_until("the step's cgroups are removed", || {
        dirs.iter().all(|d| !d.exists())
    });
    assert_node_stays_up(&cluster, "a step under Slurm's cgroups");
}
