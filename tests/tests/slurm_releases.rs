//! The plugin on every Slurm release berth supports: 22.05 (the host's),
//! 24.11 (Debian 13) and 26.05 (Debian sid), each with its own slurmctld,
//! slurmd, munged, srun and sbatch (tests/src/releases.rs), and a
//! spank_berth.so built against that release's headers.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::releases::{Release, ROOTS_DIR};
use berth_e2e::slurm::{
    assert_entrypoint_runs, assert_scancel_leaves_nothing, assert_signals_reach_the_task_once,
    image_with_entrypoint, Cluster, Plugstack, Tracking,
};
use berth_e2e::*;

/// What must work on every release: a contained task, four tasks in one
/// container, a batch script in the container, a named container across
/// steps, the image's entrypoint, a step's signal arriving once through the
/// task's relay, a bad image failing only the task, nothing left after
/// scancel, and no berth.toml at all.
fn contained_steps_work_on(release: Release) {
    let s = Sandbox::new();
    let image = s.standard_image().to_str().unwrap().to_string();
    let cluster = Cluster::start_release(&s.config(), release);
    let version = cluster.command("srun").arg("--version").output().unwrap();
    assert!(
        stdout(&version)
            .split_whitespace()
            .last()
            .is_some_and(|v| v.starts_with(release.version_prefix())),
        "{release:?} runs {}",
        stdout(&version)
    );
    let image_opt = format!("--container-image={image}");
    let context = |what: &str, out: &std::process::Output| {
        format!(
            "{release:?}: {what}\n{}\n{}\n{}",
            stdout(out),
            stderr(out),
            cluster.logs()
        )
    };

    let out = cluster.srun(&[
        &image_opt,
        "sh",
        "-c",
        "cat /etc/motd; id -u; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status",
    ]);
    let (uid, _) = test_user();
    assert_eq!(
        stdout(&out),
        format!("layer2\n{uid}\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n"),
        "{}",
        context("a contained task", &out)
    );

    let out = cluster.srun(&[
        "-n4",
        "-O",
        &image_opt,
        "sh",
        "-c",
        "readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid",
    ]);
    let lines: Vec<String> = stdout(&out).lines().map(|l| l.trim().to_string()).collect();
    let mut namespaces = lines.clone();
    namespaces.sort();
    namespaces.dedup();
    assert!(
        lines.len() == 8 && namespaces.len() == 2,
        "{}",
        context("four tasks in one container", &out)
    );

    let text = cluster.batch(
        &shared_dir(&s, "batch"),
        &format!("#SBATCH --container-image={image}\ncat /etc/motd\n"),
    );
    assert_eq!(
        text, "layer2\n",
        "{release:?}: a batch script in the container"
    );
    let text = cluster.batch(
        &shared_dir(&s, "named"),
        &format!(
            "srun --container-name=kept --container-image={image} sh -c 'echo saved > /tmp/state'\n\
             srun --container-name=kept cat /tmp/state\n"
        ),
    );
    assert_eq!(
        text, "saved\n",
        "{release:?}: a named container across steps"
    );

    // The entrypoint, once per step, its environment the tasks'.
    let entrypoint_image = image_with_entrypoint(&s);
    assert_entrypoint_runs(
        &cluster,
        &format!("--container-image={}", entrypoint_image.display()),
    );

    // Each task's relay (outside the container's pid namespace) passes the
    // step's signals on once and ends as its command did.
    assert_signals_reach_the_task_once(&cluster, &image_opt);

    let out = cluster.srun(&["--container-image=/no/such/image.sqsh", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("berth: ") && stderr(&out).contains("/no/such/image.sqsh"),
        "{}",
        context("a bad image", &out)
    );
    cluster.assert_node_stays_up("a bad image");

    assert_scancel_leaves_nothing(&s, &cluster, &image_opt);

    // No berth.toml where plugstack.conf's config= points: the defaults
    // (the root's own /var/lib/berth store). The host's release is checked
    // so by the package test, on a clean Debian 12 root.
    if release != Release::Host {
        std::fs::remove_file(s.config()).unwrap();
        let out = cluster.srun(&[&image_opt, "cat", "/etc/motd"]);
        assert_eq!(
            stdout(&out),
            "layer2\n",
            "{}",
            context("no berth.toml", &out)
        );
    }
}

#[test]
fn slurm_22_05_the_hosts() {
    require_root!();
    contained_steps_work_on(Release::Host);
}

#[test]
fn slurm_24_11_debian_13() {
    require_root!();
    contained_steps_work_on(Release::Trixie);
}

#[test]
fn slurm_26_05_debian_sid() {
    require_root!();
    contained_steps_work_on(Release::Sid);
}

/// The Debian packages (`scripts/package.sh`) install with dpkg on a clean
/// Debian 12 with Slurm (their dependencies are Debian's), and a job runs
/// in a container with the plugin loaded from plugstack.conf.d by its bare
/// name (Slurm's PluginDir) and no berth.toml at all.
#[test]
fn the_packages_install_on_debian_12_and_run_a_job() {
    require_root!();
    let base = Path::new(ROOTS_DIR).join("bookworm");
    assert!(
        base.join("usr/sbin/slurmd").exists(),
        "{} missing: run scripts/slurm-roots.sh",
        base.display()
    );
    let packages: Vec<PathBuf> = std::fs::read_dir(target_root().join("packages"))
        .expect("target/packages: run scripts/package.sh --debug (scripts/test.sh does)")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(packages.len(), 2, "{packages:?}");
    // A copy of the clean root, for this test alone.
    let copy = tempfile::Builder::new()
        .prefix("berth-debian12-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = copy.path().join("root");
    run_ok(Command::new("cp").arg("-a").arg(&base).arg(&root));
    let debs = root.join("var/cache/berth-debs");
    std::fs::create_dir_all(&debs).unwrap();
    let mut dpkg = Command::new("chroot");
    dpkg.arg(&root).args(["dpkg", "-i"]);
    for p in &packages {
        std::fs::copy(p, debs.join(p.file_name().unwrap())).unwrap();
        dpkg.arg(Path::new("/var/cache/berth-debs").join(p.file_name().unwrap()));
    }
    run_ok(&mut dpkg);
    assert!(root.join("usr/bin/berth").exists());
    let plugin_dir = root.join("usr/lib/x86_64-linux-gnu/slurm-wlm");
    assert!(plugin_dir.join("spank_berth.so").exists());
    std::fs::remove_file(root.join("etc/berth/berth.toml")).unwrap();

    let s = Sandbox::new();
    let image = s.standard_image().to_str().unwrap().to_string();
    let cluster = Cluster::start_in(
        Some(&root),
        Release::Host,
        Plugstack::Installed,
        Tracking::LinuxProc,
    );
    let out = cluster.srun(&[&format!("--container-image={image}"), "cat", "/etc/motd"]);
    assert_eq!(
        stdout(&out),
        "layer2\n",
        "{}\n{}",
        stderr(&out),
        cluster.logs()
    );
    // The node's own store, by default.
    assert!(root.join("var/lib/berth/layers").is_dir());
    drop(cluster);
}

fn run_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}
