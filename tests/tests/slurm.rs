//! The SPANK plugin on a real Slurm cluster (munged, slurmctld, slurmd on
//! localhost), driven as an unprivileged user with srun and sbatch.

use berth_e2e::slurm::{
    assert_scancel_leaves_nothing, cluster_with_standard_image, keeper_cmdlines, keepers_of,
};
use berth_e2e::*;

#[test]
fn a_task_runs_in_the_container_as_the_user() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
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
    let (_s, cluster, image) = cluster_with_standard_image();
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
    let (s, cluster, image) = cluster_with_standard_image();
    let text = cluster.batch(
        &shared_dir(&s, "batch"),
        &format!("#SBATCH --container-image={image}\ncat /etc/motd\necho FROM_IMAGE=$FROM_IMAGE\necho inherited=$BERTH_CONTAINER_IMAGE\n"),
    );
    assert!(text.contains("layer2\nFROM_IMAGE=yes\n"), "{text}");
    // srun steps of the script would inherit the container through the environment.
    assert!(text.contains(&format!("inherited={image}\n")), "{text}");
}

#[test]
fn environment_precedence() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
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
#[test]
fn failures_fail_the_tasks_with_one_line_and_never_drain_the_node() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
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
        cluster.assert_node_stays_up(&format!("{args:?}"));
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
        .as_user("sbatch", &["--container-name=a/b", "--wrap", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--container-name"),
        "{}",
        stderr(&out)
    );
    cluster.assert_node_stays_up("bad options");
    // Nothing is left behind by any of it.
    wait_until("keepers are gone", || keepers_of(&s) == 0);
    assert_eq!(count_entries(&cluster.dir().join("run/slurm")), 0);
}

#[test]
fn scancel_and_a_killed_slurmstepd_leave_nothing_behind() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    assert_scancel_leaves_nothing(&s, &cluster, &image_opt);
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

/// Every option of pyxis 0.24 (and berth's), as pyxis's README lists them.
#[test]
fn srun_help_lists_the_options() {
    require_root!();
    let (_s, cluster, _image) = cluster_with_standard_image();
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
        "--no-container-mount-home",
        "--no-container-entrypoint",
        "--container-entrypoint-log",
        "--container-unshare",
    ] {
        assert!(help.contains(option), "{option} missing from srun --help");
    }
}

#[test]
fn a_named_container_keeps_its_files_across_the_steps_of_a_job() {
    require_root!();
    named_container_across_the_steps_of_a_job(None);
}

/// The same with plugstack `container_scope=job`: the container is the
/// job's alone, in the runtime directory.
#[test]
fn a_job_scoped_named_container_keeps_its_files_across_the_steps_of_a_job() {
    require_root!();
    let s = named_container_across_the_steps_of_a_job(Some("container_scope=job"));
    assert!(
        !s.store().join("containers").exists(),
        "nothing of a job-scoped container is kept in the store"
    );
}

fn named_container_across_the_steps_of_a_job(plugstack_args: Option<&str>) -> Sandbox {
    let (s, cluster, image) = cluster_with_standard_image();
    if let Some(args) = plugstack_args {
        cluster.add_plugstack_args(args);
    }
    let dir = shared_dir(&s, "named");
    std::fs::write(dir.join("note"), "mounted\n").unwrap();
    // A later step brings its own mounts, as with pyxis.
    let text = cluster.batch(
        &dir,
        &format!(
            "srun --container-name=c1 --container-image={image} sh -c 'echo kept > /tmp/state'\n\
             srun --container-name=c1 --container-mounts={}:/step-mount cat /tmp/state /step-mount/note\n\
             srun --container-name=c1 --container-mounts=/no/such/dir:/x true || echo bad-mount-refused\n\
             srun --container-name=c1:exec sh -c 'cat /tmp/state; cat /etc/motd'\n\
             srun --container-name=c1 --container-remap-root sh -c 'echo remapped=$(id -u)'\n\
             srun --container-name=c1 --container-workdir=/etc sh -c 'echo uid=$(id -u) in $(pwd)'\n\
             srun --container-name=c2:exec true || echo no-c2\n\
             srun --container-name=c1:create --container-image={image} true || echo create-refused\n",
            dir.display()
        ),
    );
    let per_step = format!("remapped=0\nuid={} in /etc\n", test_user().0);
    for expected in [
        "kept\nmounted\n",
        "bad-mount-refused\nkept\nlayer2\n",
        // Remap-root and the working directory are each step's own.
        &per_step,
        // As in pyxis: `create` only makes a container that does not exist.
        "create-refused\n",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // The job's end (epilog) ends the named containers' keepers.
    wait_until("the named containers are gone", || keepers_of(&s) == 0);
    wait_until("the job's state is removed", || {
        count_entries(&cluster.dir().join("run/slurm")) == 0
    });
    drop(cluster);
    s
}

/// A step of a named container runs in the same pid namespace as the
/// container's other steps, also while they run (`--overlap`): it sees and
/// can signal their processes, as with pyxis.
#[test]
fn a_step_joins_the_processes_of_a_running_named_container() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let dir = shared_dir(&s, "joined");
    let text = cluster.batch(
        &dir,
        &format!(
            "srun --container-name=c1 --container-image={image} sh -c 'echo $$ > /tmp/first; exec sleep 60' &\n\
             for i in $(seq 100); do srun --overlap --container-name=c1 test -e /tmp/first && break; sleep 0.2; done\n\
             srun --overlap --container-name=c1 sh -c 'kill $(cat /tmp/first) && echo stopped-the-first-step'\n\
             wait\n\
             echo done\n"
        ),
    );
    assert!(
        text.contains("stopped-the-first-step\n") && text.ends_with("done\n"),
        "{text}"
    );
}

#[test]
fn remap_root_shows_root_inside_and_the_user_outside() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
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
    let (s, cluster, _image) = cluster_with_standard_image();
    let registry = berth_e2e::registry::Registry::start();
    registry.push(&s.standard_image(), "private/img:v1");
    let gate = berth_e2e::registry::TokenGate::start(&registry, "alice", "s3cret");
    let image_opt = format!("--container-image={}#private/img:v1", gate.host());
    let (uid, gid) = test_user();
    let home = test_user_home();
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
    let (s, cluster, image) = cluster_with_standard_image();
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

/// As in pyxis: without `--container-workdir` the tasks start in the
/// image's WorkingDir (the standard image's is /work), else `/`; a relative
/// one is taken from it (`..` cannot leave the root); one that does not
/// exist fails the task, naming it (nothing is made for it). A later step of
/// a named container has the same rules. Where a mount inside another
/// needs a mount point, it is made in the host directory with the user's
/// rights, never root's.
#[test]
fn container_workdir_is_where_the_tasks_start() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let (uid, gid) = test_user();
    let roots = s.path().join("roots");
    let users = s.path().join("users");
    std::fs::create_dir(&roots).unwrap();
    std::fs::create_dir(&users).unwrap();
    std::os::unix::fs::chown(&users, Some(uid), Some(gid)).unwrap();
    // A mount inside another: its mount point is made in that host directory.
    let other = s.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("marker"), "").unwrap();
    let nested = |outer: &std::path::Path, name: &str| {
        format!(
            "--container-mounts={}:/{name},{}:/{name}/inner",
            outer.display(),
            other.display()
        )
    };
    let (roots_nested, users_nested) = (nested(&roots, "roots"), nested(&users, "users"));
    let text = cluster.batch(
        &shared_dir(&s, "workdir"),
        &format!(
            "#SBATCH -n2\n\
             cd /tmp\n\
             srun -n1 --container-image={image} sh -c 'echo A $(readlink /proc/self/cwd) $PWD'\n\
             srun -n1 --container-image={image} --container-workdir=/etc sh -c 'echo B $(readlink /proc/self/cwd) $PWD'\n\
             srun -n1 --container-image={image} --container-workdir=../etc sh -c 'echo C $(readlink /proc/self/cwd)'\n\
             srun -n1 --container-image={image} --container-workdir=../../.. sh -c 'echo D $(readlink /proc/self/cwd)'\n\
             srun -n1 --container-image={image} --container-workdir=/pyxis true 2>&1 || echo E refused\n\
             srun -n1 --container-name=n --container-image={image} true\n\
             srun --container-name=n -n2 sh -c 'echo F $(readlink /proc/self/cwd)'\n\
             srun --container-name=n --container-workdir=/bin -n1 sh -c 'echo G $(readlink /proc/self/cwd)'\n\
             srun -n1 --container-image={image} {roots_nested} true || echo H refused\n\
             srun -n1 --container-image={image} {users_nested} sh -c 'test -e /users/inner/marker && echo I nested'\n"
        ),
    );
    for expected in [
        "A /work /work\n",
        "B /etc /etc\n",
        "C /etc\n",
        "D /\n",
        "/pyxis: No such file or directory",
        "E refused\n",
        "F /work\nF /work\n",
        "G /bin\n",
        "H refused\n",
        "I nested\n",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(
        text.contains("where the user may not create it"),
        "the refusal says why:\n{text}"
    );
    assert_eq!(
        std::fs::read_dir(&roots).unwrap().count(),
        0,
        "root wrote nothing there"
    );
    let made = std::fs::metadata(users.join("inner")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), uid);
}

#[test]
fn readonly_and_mount_home_do_what_they_say_as_options_and_variables() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let (uid, gid) = test_user();
    let home = nix::unistd::User::from_uid(uid.into())
        .unwrap()
        .expect("the test user has a passwd entry")
        .dir;
    std::fs::create_dir_all(&home).unwrap();
    let probe = home.join(".berth-home-probe");
    std::fs::write(&probe, "home\n").unwrap();
    nix::unistd::chown(&probe, Some(uid.into()), Some(gid.into())).unwrap();
    let probe = probe.display();
    let text = cluster.batch(
        &shared_dir(&s, "flags"),
        &format!(
            "srun --container-image={image} sh -c 'grep -q \" / / rw\" /proc/self/mountinfo && touch /tmp/made && echo writable; cat {probe} 2>/dev/null || echo no-home'\n\
             srun --container-image={image} --container-readonly sh -c 'grep -q \" / / ro\" /proc/self/mountinfo && echo read-only; touch /tmp/x && echo tmp-writable'\n\
             BERTH_CONTAINER_READONLY=1 srun --container-image={image} sh -c 'grep -q \" / / ro\" /proc/self/mountinfo && echo read-only-by-variable'\n\
             srun --container-image={image} --container-mount-home cat {probe}\n\
             BERTH_CONTAINER_MOUNT_HOME=1 srun --container-image={image} sh -c 'cat {probe} && touch {probe}.written && echo home-writable'\n"
        ),
    );
    let _ = std::fs::remove_file(home.join(".berth-home-probe.written"));
    for expected in [
        "writable\nno-home\n",
        "read-only\ntmp-writable\n",
        "read-only-by-variable\n",
        "home\nhome\nhome-writable\n",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}
