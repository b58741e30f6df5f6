//! pyxis 0.24's habits under berth (issue 13): its `PYXIS_CONTAINER_*`
//! variables, the command line winning over them, and whose environment
//! variables a task sees (the image's `ENV` over the job's, but for the
//! job's own: Slurm's, MPI's, the GPU allocation, TERM, `--container-env`).

use berth_e2e::slurm::cluster_with_standard_image;
use berth_e2e::*;

#[test]
fn pyxis_variables_set_the_options_and_the_command_line_wins() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let out = cluster
        .as_user("srun", &["sh", "-c", "echo ${FROM_IMAGE:-outside}"])
        .env("PYXIS_CONTAINER_IMAGE", &image)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "yes\n", "{}", stderr(&out));
    // PYXIS_CONTAINER_WRITABLE=0: read-only.
    let out = cluster
        .as_user(
            "srun",
            &["sh", "-c", "touch /x 2>/dev/null || echo read-only"],
        )
        .env("PYXIS_CONTAINER_IMAGE", &image)
        .env("PYXIS_CONTAINER_WRITABLE", "0")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "read-only\n", "{}", stderr(&out));
    // The variable asks for the home, the command line says no: no error.
    let out = cluster
        .as_user(
            "srun",
            &[
                &format!("--container-image={image}"),
                "--no-container-mount-home",
                "true",
            ],
        )
        .env("BERTH_CONTAINER_MOUNT_HOME", "1")
        .env("PYXIS_CONTAINER_MOUNT_HOME", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_images_environment_wins_but_for_what_the_job_owns() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let show = "echo FROM_IMAGE=$FROM_IMAGE PATH=$PATH TERM=$TERM LANG=${LANG:-none} \
                LC_ALL=${LC_ALL:-none} JOB=${SLURM_JOB_ID:+yes} MINE=$MINE";
    let run = |extra: &[&str]| {
        let image_opt = format!("--container-image={image}");
        let mut args = vec![image_opt.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["sh", "-c", show]);
        let out = cluster
            .as_user("srun", &args)
            .env("FROM_IMAGE", "job")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TERM", "dumb")
            .env("LANG", "en_US.UTF-8")
            .env("LC_ALL", "en_US.UTF-8")
            .env("MINE", "mine")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // The image's FROM_IMAGE and PATH; the job's TERM, Slurm's variables
    // and anything the image does not set; no job locale.
    assert_eq!(
        run(&[]),
        "FROM_IMAGE=yes PATH=/bin TERM=dumb LANG=none LC_ALL=none JOB=yes MINE=mine\n"
    );
    // --container-env names what the job keeps.
    assert_eq!(
        run(&["--container-env=FROM_IMAGE,LANG"]),
        "FROM_IMAGE=job PATH=/bin TERM=dumb LANG=en_US.UTF-8 LC_ALL=none JOB=yes MINE=mine\n"
    );
}

/// `--container-mount-home` mounts the user's home where the container's
/// HOME is: the same path, or /root under `--container-remap-root`. The
/// step's HOME never chooses the source (in a batch script's step it may
/// be the image's).
#[test]
fn the_home_is_mounted_where_the_containers_home_is() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let home = test_user_home();
    std::fs::write(home.join(".berth-home-probe-pyxis"), "mine\n").unwrap();
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(home.join(".berth-home-probe-pyxis"), Some(uid), Some(gid)).unwrap();
    let image_opt = format!("--container-image={image}");
    let run = |extra: &[&str], script: &str| {
        let mut args = vec![image_opt.as_str(), "--container-mount-home"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["sh", "-c", script]);
        let out = cluster
            .as_user("srun", &args)
            .env("HOME", "/etc")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let probe = "cat $HOME/.berth-home-probe-pyxis";
    assert_eq!(
        run(&["--container-remap-root"], &format!("echo $HOME; {probe}")),
        "/root\nmine\n"
    );
    let at_home = format!("cat {}/.berth-home-probe-pyxis", home.display());
    assert_eq!(run(&[], &at_home), "mine\n");
}

/// `--container-mounts` in pyxis's syntax: `SRC` alone, flags joined by
/// `+` (ro, noexec, propagation), spaces in paths, `tmpfs:DST[:OPTS]`,
/// `umount:DST`, and a missing source named as pyxis names it.
#[test]
fn container_mounts_take_pyxis_syntax() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let (uid, gid) = test_user();
    let dir = s.path().join("mount me");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("file.txt"), "spaced\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        dir.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    let image_opt = format!("--container-image={image}");
    let srun = |mounts: &str, script: &str| {
        let mounts = format!("--container-mounts={mounts}");
        cluster.srun(&[&image_opt, &mounts, "sh", "-c", script])
    };
    let d = dir.display();
    // SRC alone, spaces, ro and noexec, unbindable ($0: the directory).
    let out = cluster.srun(&[
        &image_opt,
        &format!("--container-mounts={d},{d}:/mnt/my mount:ro+noexec+unbindable"),
        "sh",
        "-c",
        "cat \"$0/file.txt\" \"/mnt/my mount/file.txt\"; \"$0/run.sh\"; \
         touch \"/mnt/my mount/x\" 2>/dev/null || echo read-only; \
         \"/mnt/my mount/run.sh\" 2>/dev/null || echo noexec; \
         grep -q ' /mnt/my\\\\040mount .* unbindable' /proc/self/mountinfo && echo unbindable",
        &d.to_string(),
    ]);
    assert_eq!(
        stdout(&out),
        "spaced\nspaced\nran\nread-only\nnoexec\nunbindable\n",
        "{}",
        stderr(&out)
    );
    // A tmpfs of the user's, with its options.
    let out = srun(
        "tmpfs:/scratch:size=1m",
        "echo x > /scratch/f && cat /scratch/f && stat -c %u /scratch && \
         grep ' /scratch ' /proc/self/mountinfo | grep -q 'size=1024k' && echo sized || grep ' /scratch ' /proc/self/mountinfo",
    );
    assert_eq!(
        stdout(&out),
        format!("x\n{uid}\nsized\n"),
        "{}",
        stderr(&out)
    );
    // umount: leaves out the home --container-mount-home would bind.
    let out = cluster.srun(&[
        &image_opt,
        "--container-mount-home",
        "--container-remap-root",
        "--container-mounts=umount:/root",
        "sh",
        "-c",
        "grep -q ' /root ' /proc/self/mountinfo && echo mounted || echo not-mounted",
    ]);
    assert_eq!(stdout(&out), "not-mounted\n", "{}", stderr(&out));
    // The harmless device nodes every container has may be bound (and
    // work); other devices and directories under /dev may not.
    let out = srun(
        "/dev/null:/null",
        "[ -c /null ] && echo x > /null && echo char-ok",
    );
    assert_eq!(stdout(&out), "char-ok\n", "{}", stderr(&out));
    let gpu = cluster.dir().join("dev/nvidia0");
    for refused in [format!("{}:/gpu", gpu.display()), "/dev/shm:/s".to_string()] {
        let out = srun(&refused, "true");
        assert!(!out.status.success(), "{refused} was bound");
    }
    // A missing source, named.
    let out = srun("/tmp:/mnt,/nonexistent/path:/mnt2", "true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("source path does not exist")
            && stderr(&out).contains("/nonexistent/path"),
        "{}",
        stderr(&out)
    );
}

/// `--container-unshare=net` (pyxis 0.24, and `PYXIS_CONTAINER_UNSHARE`):
/// the container's own network namespace with only its loopback, up;
/// `berth run --network none` the same. Without it, the host's network.
#[test]
fn unshare_net_leaves_only_a_loopback() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; berth-probe loopback";
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[
        &image_opt,
        "--container-unshare=net",
        "sh",
        "-c",
        interfaces,
    ]);
    assert_eq!(stdout(&out), "lo\nLOOPBACK\n", "{}", stderr(&out));
    let out = cluster
        .as_user("srun", &["sh", "-c", "tail -n +3 /proc/net/dev | wc -l"])
        .env("PYXIS_CONTAINER_IMAGE", &image)
        .env("PYXIS_CONTAINER_UNSHARE", "net")
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));
    // The host's network otherwise (the host has more than a loopback).
    let out = cluster.srun(&[&image_opt, "sh", "-c", "tail -n +3 /proc/net/dev | wc -l"]);
    assert!(
        stdout(&out).trim().parse::<u32>().unwrap() > 1,
        "{}",
        stdout(&out)
    );
    let out = s.berth(&[
        "run",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    assert_eq!(stdout(&out), "lo\n", "{}", stderr(&out));
    let out = cluster.srun(&[&image_opt, "--container-unshare=pid", "true"]);
    assert!(
        stderr(&out).contains("--container-unshare"),
        "{}",
        stderr(&out)
    );
    // A named container keeps the namespaces it was made with (pyxis):
    // its later steps are in its own network namespace without asking,
    // and one made without cannot give it later.
    let count = "tail -n +3 /proc/net/dev | wc -l";
    let out = cluster.srun(&[
        &image_opt,
        "--container-name=isolated",
        "--container-unshare=net",
        "sh",
        "-c",
        count,
    ]);
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));
    let out = cluster.srun(&["--container-name=isolated", "sh", "-c", count]);
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));
    let out = cluster.srun(&[&image_opt, "--container-name=open", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.srun(&["--container-name=open", "--container-unshare=net", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was made without a network namespace of its own"),
        "{}",
        stderr(&out)
    );
}

/// `--container-save` with a relative path writes into the job's
/// directory, as in pyxis.
#[test]
fn a_relative_save_path_is_the_job_directorys() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let dir = shared_dir(&s, "save-here");
    std::os::unix::fs::chown(&dir, Some(test_user().0), None).unwrap();
    // Submitted from there, as a shell that did `cd` would.
    let out = cluster
        .as_user(
            "srun",
            &[
                &format!("--container-image={image}"),
                "--container-save=saved.sqsh",
                "sh",
                "-c",
                "echo saved > /etc/saved",
            ],
        )
        .current_dir(&dir)
        .env("PWD", &dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the squashfs is written", || {
        dir.join("saved.sqsh").exists()
    });
}

/// pyxis's invalid-argument cases are refused by srun itself, none runs
/// the task outside a container.
#[test]
fn pyxis_invalid_arguments_are_refused() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let long_name = format!("--container-name={}", "a".repeat(300));
    let long_image = format!("--container-image={}", "A".repeat(2800));
    for args in [
        vec!["--container-image=", "true"],
        vec!["--container-image=/dev/urandom", "true"],
        vec!["--container-name=args-test", "true"],
        vec![&image_opt, "--container-name=/tmp/foo", "true"],
        vec![&image_opt, "--container-name=:attach", "true"],
        vec![&image_opt, &long_name, "true"],
        vec![&image_opt, "--container-mounts=", "true"],
        vec![&image_opt, "--container-mounts=:", "true"],
        vec![&image_opt, "--container-mounts=/home:../home", "true"],
        vec![&image_opt, "--container-mounts=/tmp:mnt:ro", "true"],
        vec![&image_opt, "--container-unshare=pid", "true"],
        vec![&long_image, "true"],
        vec!["--container-image=./", "true"],
        vec![&image_opt, "--container-mounts=/tmp:", "true"],
        vec![&image_opt, "--container-mounts=devpts:/mydevpts:ro", "true"],
        vec![&image_opt, "--container-workdir=", "true"],
        vec![
            &image_opt,
            "--container-readonly",
            "--container-writable",
            "true",
        ],
        vec![&image_opt, "--container-env=", "true"],
        vec![&image_opt, "--container-env=A,", "true"],
        vec![&image_opt, "--container-save=/tmp/", "true"],
        vec![&image_opt, "--container-save=/", "true"],
        vec!["--container-image=dockerd://ubuntu", "true"],
        vec!["--container-image=podman://ubuntu", "true"],
    ] {
        let out = cluster.srun(&args);
        assert!(!out.status.success(), "{args:?} ran");
    }
    // Images from a local daemon: said clearly, before the job is queued.
    let out = cluster.srun(&["--container-image=dockerd://ubuntu:24.04", "true"]);
    let text = stderr(&out);
    assert!(
        text.contains("--container-image: dockerd:// images")
            && text.contains("not supported by berth"),
        "{text}"
    );
    assert!(!text.contains("job "), "nothing was queued: {text}");
}

/// `--container-readonly` on a later step of a named container (pyxis
/// applies it to each step's start): that step sees the container's files
/// read-only, with a /tmp of its own, while the container stays writable
/// for the steps after it.
#[test]
fn a_later_steps_readonly_is_its_own() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[
        &image_opt,
        "--container-name=ro",
        "sh",
        "-c",
        "echo kept > /kept",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.srun(&[
        "--container-name=ro",
        "--container-readonly",
        "sh",
        "-c",
        "cat /kept; touch /new 2>&1 || echo refused; touch /tmp/scratch && echo tmp-ok",
    ]);
    let text = stdout(&out);
    assert!(
        text.starts_with("kept\n")
            && text.contains("Read-only file system")
            && text.contains("refused\ntmp-ok\n"),
        "{text}{}",
        stderr(&out)
    );
    let out = cluster.srun(&[
        "--container-name=ro",
        "sh",
        "-c",
        "touch /new && echo writable",
    ]);
    assert_eq!(stdout(&out), "writable\n", "{}", stderr(&out));
}
