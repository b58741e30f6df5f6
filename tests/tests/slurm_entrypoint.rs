//! `--container-entrypoint` on a real Slurm cluster, as pyxis runs it.

use berth_e2e::slurm::{
    assert_entrypoint_runs, cluster_with_standard_image, image_with_entrypoint, keepers_of,
};
use berth_e2e::*;

/// `--container-entrypoint` as in pyxis (tests/entrypoint.bats): the
/// entrypoint runs once per step, as the user, in the tasks' directory,
/// with the image's environment and `--container-env`'s variables only;
/// its output is shown with `--container-entrypoint-log` or when it fails.
#[test]
fn container_entrypoint_runs_the_images_entrypoint_once_for_the_step() {
    require_root!();
    let (s, cluster, _) = cluster_with_standard_image();
    let image = image_with_entrypoint(&s);
    let image_opt = format!("--container-image={}", image.display());
    assert_entrypoint_runs(&cluster, &image_opt);
    // It is off by default (as in pyxis), and the environment variable turns it on.
    let out = cluster.srun(&[&image_opt, "sh", "-c", "echo plain $FROM_IMAGE"]);
    assert_eq!(stdout(&out), "plain image\n");
    let out = cluster
        .as_user("srun", &[&image_opt, "sh", "-c", "echo $FROM_IMAGE"])
        .env("PYXIS_CONTAINER_ENTRYPOINT", "1")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "image+entry\n", "{}", stderr(&out));

    // The log: the job's own variables reach it only through --container-env.
    let uid = berth_e2e::test_user().0.to_string();
    let logged = |extra: &[&str]| {
        let mut args = vec![
            image_opt.as_str(),
            "--container-entrypoint",
            "--container-entrypoint-log",
        ];
        args.extend_from_slice(extra);
        args.push("true");
        let out = cluster
            .as_user("srun", &args)
            .env("JOB_ONLY", "job")
            .env("PASSED", "passed")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let text = logged(&[]);
    assert!(
        text.contains(&format!(
            "entrypoint ran in /tmp as {uid}: no JOB_ONLY no PASSED"
        )),
        "{text}"
    );
    let text = logged(&["--container-env=PASSED"]);
    assert!(text.contains("no JOB_ONLY passed"), "{text}");
    // --container-workdir wins over where the entrypoint left the tasks.
    let out = cluster.srun(&[
        &image_opt,
        "--container-entrypoint",
        "--container-workdir=/",
        "pwd",
    ]);
    assert_eq!(stdout(&out), "/\n", "{}", stderr(&out));
    // Remapped, it is root of the tasks' user namespace (pyxis's nginx test).
    let text = logged(&["--container-remap-root"]);
    assert!(text.contains("entrypoint ran in /tmp as 0: "), "{text}");

    // A later step of a named container runs it again, in the same files.
    let out = cluster.srun(&[
        &image_opt,
        "--container-name=ep",
        "--container-entrypoint",
        "sh",
        "-c",
        "wc -l < /tmp/entrypoint-runs",
    ]);
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));
    let out = cluster.srun(&[
        "--container-name=ep",
        "--container-entrypoint",
        "sh",
        "-c",
        "echo $FROM_IMAGE; wc -l < /tmp/entrypoint-runs",
    ]);
    assert_eq!(stdout(&out), "image+entry\n2\n", "{}", stderr(&out));

    // An entrypoint the image lacks, and one that never runs its command,
    // fail every task with a berth: line (and the entrypoint's output).
    for (name, entrypoint, why) in [
        (
            "missing",
            vec!["/no/such/entrypoint".to_string()],
            "could not be run (/no/such/entrypoint: ",
        ),
        (
            "exits",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo giving up; exit 3".into(),
            ],
            "exited with status 3",
        ),
    ] {
        let broken = s.path().join(format!("broken-entrypoint-{name}"));
        write_layout(
            &broken,
            vec![(base_layer().finish(), Compression::Gzip)],
            &RunConfig {
                entrypoint,
                ..Default::default()
            },
        );
        let image_opt = format!("--container-image={}", broken.display());
        let out = cluster.srun(&[&image_opt, "--container-entrypoint", "-n2", "echo", "ran"]);
        assert!(!out.status.success());
        assert!(!stdout(&out).contains("ran"), "{}", stdout(&out));
        let text = stderr(&out);
        assert!(
            text.contains(why) && text.contains("try --no-container-entrypoint"),
            "{name}: {text}"
        );
        if name == "exits" {
            assert!(text.contains("berth: entrypoint: giving up"), "{text}");
        }
    }

    // A step cancelled while its entrypoint runs (named: its keeper is not
    // tied to the step) leaves no keeper, cgroup or state behind.
    // A sleep of its own length, told from any other on the machine.
    let sleep = format!("sleep {}", 100 + std::process::id() % 100);
    let sleeping = || {
        let cmdline = sleep.replace(' ', "\0");
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.starts_with(cmdline.as_bytes()))
        })
    };
    let slow = s.path().join("slow-entrypoint");
    write_layout(
        &slow,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig {
            entrypoint: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{sleep}; exec \"$@\""),
                "sh".into(),
            ],
            ..Default::default()
        },
    );
    let slow_opt = format!("--container-image={}", slow.display());
    let mut srun = cluster.srun_in_background(&[
        &slow_opt,
        "-J",
        "slow-entry",
        "--container-name=slow",
        "--container-entrypoint",
        "true",
    ]);
    wait_until("the slow entrypoint runs", || {
        keepers_of(&s) > 0 && sleeping()
    });
    assert!(cluster.scancel(&["-n", "slow-entry"]));
    let _ = srun.wait();
    wait_until("no keeper is left", || keepers_of(&s) == 0);
    wait_until("no state is left", || {
        count_entries(&cluster.dir().join("run/slurm")) == 0
    });
    assert!(!sleeping(), "the entrypoint's processes are gone");
}
