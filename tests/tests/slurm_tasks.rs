//! Slurm tasks in the container's pid namespace, seen from outside: the
//! relay passes signals on once whatever Slurm's process tracking, the task
//! ends as its command did, the terminal, suspend and scancel reach the
//! container, a parallel-debugger launch fails clearly; and where the task
//! starts when the job's directory is missing on the node.

use std::process::Stdio;

use berth_e2e::slurm::{
    assert_signals_reach_the_task_once, cluster_with_standard_image,
    cluster_with_standard_image_tracked, keepers_of, Tracking,
};
use berth_e2e::*;

/// Each task is forked into the container's pid namespace, and the task
/// Slurm knows relays to it from outside. A step's signal still arrives
/// exactly once whichever way Slurm tracks steps (proctrack/cgroup signals
/// only the tasks, that is the relays; proctrack/linuxproc the process tree
/// but not the relay), the task ends with its command's exit code or
/// signal, and `scancel --batch --signal` (what `#SBATCH --signal=B:...`
/// does: the batch task's pid alone) reaches a contained batch script.
#[test]
fn signals_arrive_once_and_tasks_end_as_their_command() {
    require_root!();
    let rt_signal = (libc::SIGRTMIN() + 2).to_string();
    let counting = format!("exec berth-probe count-signal {rt_signal}");
    for tracking in [Tracking::LinuxProc, Tracking::Pgid, Tracking::Cgroup] {
        let (s, cluster, image) = cluster_with_standard_image_tracked(tracking);
        let image_opt = format!("--container-image={image}");
        assert_signals_reach_the_task_once(&cluster, &image_opt);
        if tracking == Tracking::Pgid {
            // slurmstepd signals the task's process group there, so the relay
            // passes nothing of slurmstepd's on, and the batch task's pid
            // alone is not reached (docs/security.md, known gaps).
            continue;
        }
        let dir = shared_dir(&s, "batch-signal");
        let script = dir.join("job.sh");
        let output = dir.join("out.txt");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n#SBATCH --output={}\n#SBATCH -J batch-signalled\n#SBATCH {image_opt}\n{counting}\n",
                output.display()
            ),
        )
        .unwrap();
        let mut sbatch = cluster
            .as_user("sbatch", &["--wait", script.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the batch script is ready", || {
            std::fs::read_to_string(&output).is_ok_and(|t| t.contains("ready"))
        });
        assert!(cluster.scancel(&["--batch", "-s", &rt_signal, "-n", "batch-signalled"]));
        assert!(sbatch.wait().unwrap().success(), "{}", cluster.logs());
        let text = std::fs::read_to_string(&output).unwrap();
        assert_eq!(
            text,
            format!("ready\nsignal {rt_signal} x1\n"),
            "batch: {text}"
        );
    }
}

/// Under `srun --pty` the contained command holds the terminal's
/// foreground (it reads the terminal without being stopped, and gets its
/// ^C), though the task Slurm made the session leader stays outside as the
/// relay.
#[test]
fn srun_pty_gives_the_contained_command_the_terminal() {
    use std::io::{Read, Write};
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let srun = format!(
        "srun --pty --container-image={image} sh -c 'berth-probe foreground; read line; echo got:$line'"
    );
    // `script` gives srun a terminal; `timeout` keeps a stopped task from
    // hanging the test.
    let mut child = cluster
        .as_user("timeout", &["60", "script", "-qec", &srun, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{text}\n{}", cluster.logs());
    assert!(text.contains("FG"), "{text}");
    assert!(text.contains("got:hello"), "{text}");
}

/// The job's directory may not exist on the node (a submit directory that
/// compute nodes do not mount): the container starts anyway, in Slurm's
/// fallback /tmp. Relative image and mount paths are the job directory's,
/// and where it is missing they fail naming the path they were looked for at.
#[test]
fn a_job_directory_missing_on_the_node_fails_only_relative_paths() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    // The task starts in the image's working directory wherever the job's is.
    let out = cluster.srun(&["-D", "/no/such/dir", &image_opt, "pwd"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), "/work\n");

    let job_dir = shared_dir(&s, "jobdir");
    std::os::unix::fs::symlink(&image, job_dir.join("image")).unwrap();
    std::fs::create_dir(job_dir.join("data")).unwrap();
    std::fs::write(job_dir.join("data/note"), "from the job dir\n").unwrap();
    let relative = [
        "--container-image=./image",
        "--container-mounts=data:/data",
        "cat",
        "/data/note",
    ];
    let mut args = vec!["-D", job_dir.to_str().unwrap()];
    args.extend(relative);
    let out = cluster.srun(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from the job dir\n");

    let mut args = vec!["-D", "/no/such/dir"];
    args.extend(relative);
    let out = cluster.srun(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("a relative path, but the job's directory does not exist on this node"),
        "{}",
        stderr(&out)
    );
    cluster.assert_node_stays_up("a relative image path from a missing job directory");
}

/// Suspending a job stops every process of its container, resuming
/// continues them, and scancel ends them all (nothing keeps the step
/// alive), whichever way Slurm tracks steps.
#[test]
fn suspend_and_scancel_reach_every_process_of_the_container() {
    require_root!();
    for tracking in [Tracking::LinuxProc, Tracking::Pgid, Tracking::Cgroup] {
        let (s, cluster, image) = cluster_with_standard_image_tracked(tracking);
        let image_opt = format!("--container-image={image}");
        let mut srun = cluster
            .as_user(
                "srun",
                &[
                    "-J",
                    "suspended",
                    &image_opt,
                    "sh",
                    "-c",
                    "trap '' TSTP; sleep 300 & sleep 301 & wait",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sleeps = || processes_of_the_test_user(&["sleep\x00300\x00", "sleep\x00301\x00"]);
        wait_until("both processes run", || sleeps().len() == 2);
        let job = cluster
            .command("squeue")
            .args(["-h", "-n", "suspended", "-o", "%i"])
            .output()
            .unwrap();
        let job = stdout(&job).trim().to_string();
        let scontrol = |verb: &str| {
            let out = cluster
                .command("scontrol")
                .args([verb, &job])
                .output()
                .unwrap();
            assert!(out.status.success(), "scontrol {verb}: {}", stderr(&out));
        };
        scontrol("suspend");
        // Stopped by a signal (T), or frozen by the cgroup freezer (D).
        let stopped = |p: &(i32, char)| p.1 == 'T' || p.1 == 'D';
        wait_until(&format!("{tracking:?}: the processes are stopped"), || {
            sleeps().iter().filter(|p| stopped(p)).count() == 2
        });
        scontrol("resume");
        wait_until(&format!("{tracking:?}: the processes run again"), || {
            sleeps().iter().all(|p| !stopped(p))
        });
        assert!(cluster.scancel(&["-n", "suspended"]));
        let _ = srun.wait();
        wait_until(&format!("{tracking:?}: nothing is left"), || {
            sleeps().is_empty() && keepers_of(&s) == 0
        });
        cluster.assert_node_stays_up("scancel of a suspended and resumed step");
    }
}

/// The test user's processes whose command line is one of `cmdlines`
/// (NUL-separated), with their state letter.
fn processes_of_the_test_user(cmdlines: &[&str]) -> Vec<(i32, char)> {
    use std::os::unix::fs::MetadataExt;
    let (uid, _) = test_user();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let owned = std::fs::metadata(e.path()).ok()?.uid() == uid;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let wanted = cmdlines.iter().any(|c| cmdline == c.as_bytes());
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat.rsplit(") ").next()?.chars().next()?;
            (owned && wanted).then_some((pid, state))
        })
        .collect()
}

/// Slurm's parallel-debugger launch cannot trace a contained task (the
/// task Slurm forked is the relay): it fails at once with a message,
/// instead of leaving the job hanging.
#[test]
fn a_parallel_debugger_launch_fails_clearly() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let out = cluster
        .as_user(
            "timeout",
            &[
                "60",
                "srun",
                "--debugger-test",
                &format!("--container-image={image}"),
                "true",
            ],
        )
        .output()
        .unwrap();
    // (srun --debugger-test itself exits 0 whatever the tasks did.)
    assert_ne!(out.status.code(), Some(124), "srun hung: {}", stderr(&out));
    assert!(
        stderr(&out).contains("a parallel debugger cannot attach to a task in a container"),
        "{}",
        stderr(&out)
    );
    cluster.assert_node_stays_up("a parallel debugger launch");
}
