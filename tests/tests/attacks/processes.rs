//! Processes: init cannot be ptraced, Slurm tasks cannot reach the user's
//! processes outside their container, remap-root keeps its groups and its
//! bounding set (findings 11 and 12).

use super::*;

/// Rootless, the command could PTRACE_ATTACH the container's init (same
/// uid), and hang berth for ever. Now init is not dumpable.
#[test]
fn the_command_cannot_ptrace_its_init() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let out = s.berth_as_user(&["run", image.to_str().unwrap(), "berth-probe", "ptrace", "1"]);
    assert_eq!(ok(out).trim(), "EPERM");
}

/// Root-run `--remap-root` dropped the user's supplementary groups, so a
/// file denied to one of them (mode 0604, that group's owner) became
/// readable as "other". Now the groups stay, and cannot be dropped inside.
#[test]
fn remap_root_keeps_the_groups_that_deny_access() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let group = "berth-denied";
    let _ = Command::new("groupadd").args(["-f", group]).status();
    let added = Command::new("gpasswd")
        .args(["-a", TEST_USER, group])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let dir = s.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("not-for-the-group");
    std::fs::write(&file, "readable by others only\n").unwrap();
    let chgrp = Command::new("chgrp")
        .arg(group)
        .arg(&file)
        .status()
        .unwrap();
    assert!(chgrp.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let mount = format!("{}:/shared", dir.display());
    for remap in [false, true] {
        let user = user_flag();
        let mut args = vec!["run", "--user", user.as_str()];
        if remap {
            args.push("--remap-root");
        }
        args.extend_from_slice(&[
            "-m",
            &mount,
            image.to_str().unwrap(),
            "berth-probe",
            "read",
            "/shared/not-for-the-group",
        ]);
        let text = ok(s.berth(&args));
        assert_eq!(text.trim(), "EACCES", "remap-root {remap}: {text}");
    }
}

/// Slurm `--container-remap-root` tasks had a full bounding set (a new user
/// namespace starts with one). Now it is the configured set, as the
/// permitted one.
#[test]
fn slurm_remap_root_tasks_have_only_the_configured_bounding_set() {
    needs_root();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[
        &image_opt,
        "--container-remap-root",
        "sh",
        "-c",
        "grep -E '^Cap(Prm|Bnd):' /proc/self/status; cat /proc/self/setgroups",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(value("CapBnd:"), value("CapPrm:"), "{text}");
    assert_ne!(value("CapPrm:"), "0000000000000000", "{text}");
    // Its root cannot drop the user's groups (one may deny a file).
    assert_eq!(text.lines().last(), Some("deny"), "{text}");
}

/// Slurm tasks shared the host's pid namespace: a task could ptrace the
/// user's own processes outside the container (a login shell, another job)
/// and read the host's files through their `/proc/PID/root`. Now the tasks
/// of a step are in the container's pid namespace: they reach each other
/// (MPI's cross-memory attach needs that) and nothing outside.
#[test]
fn slurm_tasks_cannot_reach_the_users_processes_outside_the_container() {
    needs_root();
    let (_s, cluster, image) = cluster_with_standard_image();
    let (uid, gid) = test_user();
    let marker = test_user_home().join("outside-only");
    std::fs::write(&marker, "HOST-ONLY\n").unwrap();
    std::os::unix::fs::chown(&marker, Some(uid), Some(gid)).unwrap();
    let mut outside = Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .args(["--clear-groups", "sleep", "300"])
        .spawn()
        .unwrap();
    let pid = outside.id();
    wait_until("the user's process outside runs as the user", || {
        std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
    });
    let script = format!(
        "berth-probe ptrace {pid}; berth-probe read /proc/{pid}/root{marker}; \
         echo $$ > /dev/shm/pid.$SLURM_PROCID; \
         while [ ! -e /dev/shm/pid.0 ] || [ ! -e /dev/shm/pid.1 ]; do sleep 0.05; done; \
         [ $SLURM_PROCID = 0 ] && echo peer $(berth-probe ptrace $(cat /dev/shm/pid.1)); sleep 0.5",
        marker = marker.display()
    );
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&["-n2", "-O", &image_opt, "sh", "-c", &script]);
    let _ = outside.kill();
    let _ = outside.wait();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| **l == "ESRCH").count(),
        2,
        "a task could ptrace the user's process outside: {text}"
    );
    assert_eq!(
        lines.iter().filter(|l| **l == "ENOENT").count(),
        2,
        "a task could read the host through /proc/{pid}/root: {text}"
    );
    assert!(
        lines.contains(&"peer OK"),
        "tasks cannot reach each other: {text}"
    );
}

/// With `--container-remap-root` the task made itself dumpable to write its
/// id maps and stayed so until exec: any process of the container (here the
/// user's own task prolog, which Slurm runs after the plugin's hooks) could
/// read, and with pidfd_getfd take, the descriptors slurmstepd left it
/// (root's slurmd log, open for writing; slurmstepd's sockets).
#[test]
fn a_task_not_yet_started_lends_the_container_none_of_its_descriptors() {
    needs_root();
    let (s, cluster, image) = cluster_with_standard_image();
    let dir = shared_dir(&s, "prolog");
    let prolog = dir.join("prolog.sh");
    std::fs::write(
        &prolog,
        "#!/bin/sh\necho \"print fds: $(ls /proc/$PPID/fd 2>&1 | tr '\\n' ' ')\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&prolog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image_opt = format!("--container-image={image}");
    let mount_opt = format!("--container-mounts={}:/prolog:ro", dir.display());
    for remap in ["--container-remap-root", "--no-container-remap-root"] {
        let out = cluster.srun(&[
            &image_opt,
            &mount_opt,
            remap,
            "--task-prolog=/prolog/prolog.sh",
            "true",
        ]);
        assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
        let text = stdout(&out);
        assert!(text.starts_with("fds: "), "the prolog did not run: {text}");
        // Hidden (hidepid) or refused: either way, no descriptor listed.
        assert!(
            text.contains("No such file") || text.contains("Permission denied"),
            "{remap}: the task's descriptors were open to the container: {text}"
        );
    }
}
