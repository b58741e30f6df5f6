//! What several Slurm test files check the same way: a cluster with the
//! standard image, signals reaching a task once, scancel leaving nothing,
//! the entrypoint, and the node's keepers and task cgroups.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{Cluster, Tracking};
use crate::{stderr, test_user, Sandbox};

/// A sandbox with the standard image, a cluster using its config, and the
/// image's path.
pub fn cluster_with_standard_image() -> (Sandbox, Cluster, String) {
    cluster_with_standard_image_tracked(Tracking::LinuxProc)
}

/// `cluster_with_standard_image`, with Slurm tracking steps as `tracking` says.
pub fn cluster_with_standard_image_tracked(tracking: Tracking) -> (Sandbox, Cluster, String) {
    let s = Sandbox::new();
    let image = s.standard_image().to_str().unwrap().to_string();
    let cluster = Cluster::start_tracking(&s.config(), tracking);
    (s, cluster, image)
}

/// A step's signal (`scancel -s`) reaches a contained task exactly once (a
/// real-time signal: every copy sent is delivered, so a duplicate would
/// count), and the task ends with its command's exit code or signal.
pub fn assert_signals_reach_the_task_once(cluster: &Cluster, image_opt: &str) {
    use std::io::BufRead;
    let rt_signal = (libc::SIGRTMIN() + 2).to_string();
    let counting = format!("exec berth-probe count-signal {rt_signal}");
    let mut srun = cluster
        .as_user(
            "srun",
            &["-J", "signalled", image_opt, "sh", "-c", &counting],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(srun.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    assert!(cluster.scancel(&["-s", &rt_signal, "-n", "signalled"]));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(srun.wait().unwrap().success(), "{}", cluster.logs());
    assert_eq!(
        rest,
        [format!("signal {rt_signal} x1")],
        "{:?}, {:?}",
        cluster.release,
        cluster.tracking
    );

    let out = cluster.srun(&[image_opt, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = cluster.srun(&[image_opt, "sh", "-c", "kill -TERM $$"]);
    assert!(
        stderr(&out).contains("Terminated"),
        "the task did not end by its signal: {}",
        stderr(&out)
    );
}

/// scancel of a running contained step: srun ends, and the container's
/// keeper and state are gone, the node up.
pub fn assert_scancel_leaves_nothing(s: &Sandbox, cluster: &Cluster, image_opt: &str) {
    let mut srun = cluster.sleeping_step("to-cancel", &[image_opt]);
    crate::wait_until("the container runs", || keepers_of(s) == 1);
    assert!(cluster.scancel(&["-n", "to-cancel"]));
    let _ = srun.wait();
    crate::wait_until("the keeper is gone after scancel", || keepers_of(s) == 0);
    crate::wait_until("the step's state is removed", || {
        crate::count_entries(&cluster.dir().join("run/slurm")) == 0
    });
    cluster.assert_node_stays_up("scancel");
}

/// An image whose Entrypoint (`/entry.sh --from-image`) says where and
/// with what it ran, counts its runs in /tmp/entrypoint-runs, adds to the
/// image's FROM_IMAGE, sets SET_BY_ENTRYPOINT, moves to /tmp/left-in and
/// runs the rest (as Docker images' entrypoints do: `exec "$@"`).
pub fn image_with_entrypoint(s: &Sandbox) -> PathBuf {
    use crate::{base_layer, write_layout, Compression, Layer, RunConfig};
    let entry = b"#!/bin/sh\n\
        echo \"entrypoint ran in $(pwd) as $(id -u): ${JOB_ONLY:-no JOB_ONLY} ${PASSED:-no PASSED}\"\n\
        echo run >> /tmp/entrypoint-runs\n\
        export SET_BY_ENTRYPOINT=yes FROM_IMAGE=\"$FROM_IMAGE+entry\"\n\
        mkdir -p /tmp/left-in && cd /tmp/left-in\n\
        [ \"$1\" = --from-image ] && shift\n\
        exec \"$@\"\n";
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
            env: vec!["PATH=/usr/bin:/bin".into(), "FROM_IMAGE=image".into()],
            working_dir: Some("/tmp".into()),
            ..Default::default()
        },
    );
    image
}

/// `srun --container-entrypoint -n2` of `image_with_entrypoint`, as pyxis:
/// the entrypoint runs once for the step, its output hidden, and both
/// tasks run their own command with the environment it left, where it
/// left them.
pub fn assert_entrypoint_runs(cluster: &Cluster, image_opt: &str) {
    let script =
        "echo \"cmd: $0 $SET_BY_ENTRYPOINT $FROM_IMAGE runs=$(wc -l < /tmp/entrypoint-runs) in $(pwd)\"";
    let out = cluster.srun(&[
        image_opt,
        "--container-entrypoint",
        "-n2",
        "sh",
        "-c",
        script,
        "arg1",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let (text, errors) = (crate::stdout(&out), stderr(&out));
    assert_eq!(
        text.matches("cmd: arg1 yes image+entry runs=1 in /tmp/left-in")
            .count(),
        2,
        "{:?}: {text}{errors}",
        cluster.release
    );
    assert!(
        !text.contains("entrypoint ran") && !errors.contains("entrypoint ran"),
        "{:?}: the entrypoint's output is hidden: {text}{errors}",
        cluster.release
    );
}

/// Command lines of the container keepers (and named containers' step
/// views) started with this sandbox's config.
pub fn keeper_cmdlines(s: &Sandbox) -> Vec<String> {
    let needle = s.config().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| {
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ")
        })
        .filter(|text| {
            (text.contains("slurm-start") || text.contains("slurm-join")) && text.contains(&needle)
        })
        .collect()
}

/// How many container keepers of this sandbox run.
pub fn keepers_of(s: &Sandbox) -> usize {
    keeper_cmdlines(s).len()
}

/// The host paths of the berth cgroups (of `controllers`, v1) holding the
/// `sleep 300` task of the test user's job named `job`.
pub fn task_cgroup_dirs(job: &str, controllers: &[&str]) -> Vec<PathBuf> {
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
