//! GPUs and cgroups on a real Slurm cluster: gres-allocated fake GPUs, the
//! partition's limits in a cgroup per step, and berth's cgroup inside
//! Slurm's own when Slurm confines steps with cgroups.

use berth_e2e::slurm::{cluster_with_standard_image, keepers_of, task_cgroup_dirs, Cluster};
use berth_e2e::*;

#[test]
fn each_job_sees_only_the_gpus_slurm_gave_it() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
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
    // Nor does a step whose user forges the GPU list: Slurm clears it.
    let forged = cluster
        .as_user(
            "srun",
            &[
                &image_opt,
                "sh",
                "-c",
                "ls /dev | grep -c 'nvidia[0-9]' || true",
            ],
        )
        .env("SLURM_STEP_GPUS", "0,1")
        .output()
        .unwrap();
    assert_eq!(stdout(&forged).trim(), "0", "{}", stderr(&forged));
}

/// berth finds the step's GPU files in gres.conf under slurmstepd's own
/// node name. A user's `SLURMD_NODENAME` (srun sends its environment on)
/// naming another node's gres.conf line must not map the step's GPU to
/// that node's device files (on this node: another job's GPU).
#[test]
fn a_forged_node_name_does_not_lead_to_another_nodes_gpu_files() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let out = cluster
        .as_user(
            "srun",
            &[
                &image_opt,
                "--gres=gpu:1",
                "sh",
                "-c",
                "ls /dev | grep 'nvidia[0-9]'",
            ],
        )
        .env("SLURMD_NODENAME", "othernode")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let gpu = stdout(&out);
    assert!(
        ["nvidia0\n", "nvidia1\n"].contains(&gpu.as_str()),
        "the step got {gpu:?}"
    );
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
    // absent driver goes; the other one's node, mounted in from the host,
    // is refused (a user's bind mount is nodev: EACCES before Slurm's
    // device cgroup would say EPERM). berth's cgroup holds the memory limit.
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
    assert_eq!(stdout(&out), "1\nENXIO\nEACCES\n");
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
    cluster.assert_node_stays_up("a step under Slurm's cgroups");
}

#[test]
fn each_step_of_a_named_container_sees_its_own_gpus() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let dir = cluster.dir().join("named-gpus");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // Two steps with one GPU each share the named container at the same
    // time (the barrier is in the container's own /tmp), then a third step
    // finds what both wrote.
    let step = "mkdir -p /tmp/steps; touch /tmp/steps/$SLURM_STEP_ID; n=0; \
                while [ $(ls /tmp/steps | wc -l) -lt 2 ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; \
                echo STEP $(ls /tmp/steps | wc -l) $(ls /dev | grep nvidia | grep -v ctl) CUDA=$CUDA_VISIBLE_DEVICES";
    let text = cluster.batch(
        &dir,
        &format!(
            "#SBATCH --gres=gpu:2 -n1 -c2\n\
             for i in 1 2; do srun --exact -n1 -c1 --gres=gpu:1 --container-name=c --container-image={image} sh -c '{step}' & done; wait\n\
             srun -n2 -c1 --container-name=c sh -c 'echo FILES $(ls /tmp/steps | wc -l) $(readlink /proc/self/ns/mnt)'\n"
        ),
    );
    let mut seen: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("STEP 2 "))
        .map(|l| {
            assert!(l.ends_with(" CUDA=0"), "{text}");
            l.trim_end_matches(" CUDA=0")
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["nvidia0", "nvidia1"], "{text}\n{}", cluster.logs());
    // Both tasks of that step share its one view.
    let views: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FILES 2 "))
        .collect();
    assert!(views.len() == 2 && views[0] == views[1], "{text}");
    // Each step's view ends with its step, the container with the job.
    wait_until("the named container and the views are gone", || {
        keepers_of(&s) == 0
    });
}
