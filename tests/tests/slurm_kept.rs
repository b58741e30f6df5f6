//! Named containers kept on the node after the job (plugstack
//! `container_scope=global`, the default as in pyxis): the same user's
//! later jobs find their files, no other user sees them, two jobs using
//! one at once share one running container, and the writable layer is a
//! bounded filesystem on the node's disk.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_e2e::slurm::{cluster_with_standard_image, keepers_of};
use berth_e2e::*;

/// The directory of the test user's named container `name` in the store.
fn container_dir(s: &Sandbox, name: &str) -> PathBuf {
    s.store()
        .join("containers")
        .join(test_user().0.to_string())
        .join(name)
}

/// The loop devices whose backing file is `file`.
fn loop_devices_backing(file: &Path) -> usize {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|f| f.trim_end() == file.to_string_lossy())
        })
        .count()
}

#[test]
fn a_named_container_is_kept_for_the_users_later_jobs_and_no_one_elses() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    // Job 1 makes it and changes it as (remapped) root.
    let out = cluster.srun(&[
        "--container-name=dev",
        &image_opt,
        "--container-remap-root",
        "sh",
        "-c",
        "echo installed > /etc/pkg && rm /etc/motd",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    // No keeper runs between jobs; the layer is on disk, mounted nowhere.
    wait_until("the container's keeper ends with the job", || {
        keepers_of(&s) == 0
    });
    let dir = container_dir(&s, "dev");
    let layer = dir.join("layer.ext4");
    wait_until("nothing mounts the writable layer", || {
        loop_devices_backing(&layer) == 0
    });
    let meta = std::fs::metadata(&layer).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o077), (0, 0));
    let store_mode = std::fs::metadata(s.store()).unwrap().permissions().mode();
    assert_eq!(store_mode & 0o077, 0, "the store is root's alone");

    // Later jobs of the same user, with or without the image.
    for name in ["dev", "dev:exec", "dev:auto"] {
        let out = cluster.srun(&[
            &format!("--container-name={name}"),
            "sh",
            "-c",
            "cat /etc/pkg; test -e /etc/motd || echo motd-gone; stat -c %u /etc/pkg",
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("installed\nmotd-gone\n{}\n", test_user().0),
            "{name}"
        );
    }
    let out = cluster.srun(&["--container-name=dev", &image_opt, "cat", "/etc/pkg"]);
    assert_eq!(stdout(&out), "installed\n", "the image given is ignored");
    // pyxis's modes across jobs.
    let out = cluster.srun(&["--container-name=dev:create", &image_opt, "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = cluster.srun(&["--container-name=other:exec", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("there is no container named \"other\""),
        "{}",
        stderr(&out)
    );
    let where_am_i = "echo ${FROM_IMAGE:-outside}";
    let out = cluster.srun(&[
        "--container-name=made:no_exec",
        &image_opt,
        "sh",
        "-c",
        where_am_i,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "outside\n", "no_exec: the task ran outside");
    assert!(container_dir(&s, "made").join("container.json").exists());
    let out = cluster.srun(&["--container-name=made:exec", "sh", "-c", where_am_i]);
    assert_eq!(stdout(&out), "yes\n", "{}", stderr(&out));

    // Another user (root's own jobs) neither sees nor uses it.
    let root_srun = |args: &[&str]| cluster.command("srun").args(args).output().unwrap();
    let out = root_srun(&["--container-name=dev", "cat", "/etc/pkg"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no container named \"dev\" on this node"),
        "{}",
        stderr(&out)
    );
    let out = root_srun(&[
        "--container-name=dev",
        &image_opt,
        "sh",
        "-c",
        "test -e /etc/pkg || echo own-container",
    ]);
    assert_eq!(stdout(&out), "own-container\n", "{}", stderr(&out));
    let out = cluster.srun(&["--container-name=dev", "cat", "/etc/pkg"]);
    assert_eq!(stdout(&out), "installed\n", "{}", stderr(&out));
    wait_until("every keeper ends with its job", || keepers_of(&s) == 0);
}

/// Two jobs using one named container at once share one running
/// container: the same files (the writable layer mounted once) and
/// processes.
#[test]
fn two_jobs_in_one_named_container_at_once_share_it() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let shared = shared_dir(&s, "two-jobs");
    let mut first = cluster.srun_in_background(&[
        "--container-name=dev",
        &format!("--container-image={image}"),
        &format!("--container-mounts={}:/shared", shared.display()),
        "sh",
        "-c",
        "echo $$ > /tmp/first; touch /shared/started; exec sleep 300",
    ]);
    wait_until("the first job runs", || shared.join("started").exists());
    let out = cluster.srun(&[
        "--container-name=dev",
        "sh",
        "-c",
        "test -e /shared/started || echo no-first-jobs-mount; \
         for i in $(seq 100); do grep -q sleep /proc/$(cat /tmp/first)/cmdline && break; sleep 0.1; done; \
         kill $(cat /tmp/first) && echo stopped-the-first-job",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), "no-first-jobs-mount\nstopped-the-first-job\n");
    let _ = first.wait();
    let layer = container_dir(&s, "dev").join("layer.ext4");
    wait_until("both jobs' keepers end", || keepers_of(&s) == 0);
    wait_until("nothing mounts the writable layer", || {
        loop_devices_backing(&layer) == 0
    });
}

/// The writable layer is a filesystem of `[store] container_max_size`:
/// writing past it fails in the container only, with ENOSPC, and the
/// container works again once space is freed.
#[test]
fn a_named_containers_writable_layer_is_bounded_and_recovers_when_freed() {
    require_root!();
    let s = Sandbox::new();
    s.write_config("container_max_size = \"32M\"\n");
    let image = s.standard_image();
    let cluster = berth_e2e::slurm::Cluster::start(&s.config());
    let out = cluster.srun(&[
        "--container-name=small",
        &format!("--container-image={}", image.display()),
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=64 2>&1; echo rc=$?",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("No space left on device"),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(!text.contains("rc=0"), "{text}");
    let out = cluster.srun(&[
        "--container-name=small",
        "sh",
        "-c",
        "rm /big && echo after > /after && cat /after",
    ]);
    assert_eq!(stdout(&out), "after\n", "{}", stderr(&out));
    let layer = container_dir(&s, "small").join("layer.ext4");
    assert!(std::fs::metadata(&layer).unwrap().len() <= 32 << 20);
}

/// SIGKILL of a step's slurmstepd while it runs in a named container
/// leaves the container usable by the next job.
#[test]
fn a_named_container_survives_a_killed_slurmstepd_for_the_next_job() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let shared = shared_dir(&s, "kill9-kept");
    let mut first = cluster.srun_in_background(&[
        "-J",
        "doomed",
        "--container-name=dev",
        &format!("--container-image={image}"),
        &format!("--container-mounts={}:/shared", shared.display()),
        "sh",
        "-c",
        "echo kept > /tmp/state; touch /shared/started; exec sleep 300",
    ]);
    wait_until("the step runs", || shared.join("started").exists());
    // The job's only step (job 1 of this cluster).
    let stepd = cluster
        .stepd("slurmstepd: [1.0]")
        .expect("the step's slurmstepd");
    // SAFETY: kill on the pid of this test cluster's slurmstepd.
    unsafe { libc::kill(stepd, libc::SIGKILL) };
    let _ = first.kill();
    let _ = first.wait();
    let _ = cluster.scancel(&["-n", "doomed"]);
    let out = cluster.srun(&["--container-name=dev", "cat", "/tmp/state"]);
    assert_eq!(
        stdout(&out),
        "kept\n",
        "{}\n{}",
        stderr(&out),
        cluster.logs()
    );
    wait_until("every keeper ends", || keepers_of(&s) == 0);
}

/// Unmounts the store's own filesystem when the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A full disk under the store fails the step that needs room, with a
/// message saying so, and the container works again once space is freed
/// (its filesystem repaired if a refused write left an error in it).
#[test]
fn a_full_disk_fails_the_step_clearly_and_the_container_recovers_when_freed() {
    require_root!();
    let s = Sandbox::new();
    let store = s.store();
    std::fs::create_dir_all(&store).unwrap();
    // The store on a small filesystem of its own, filled below.
    nix::mount::mount(
        Some("tmpfs"),
        &store,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256M,mode=700"),
    )
    .unwrap();
    let _unmount = Unmount(store.clone());
    s.write_config("container_max_size = \"1G\"\n");
    let image = s.standard_image();
    let cluster = berth_e2e::slurm::Cluster::start(&s.config());
    let out = cluster.srun(&[
        "--container-name=dev",
        &format!("--container-image={}", image.display()),
        "sh",
        "-c",
        "echo before > /kept",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    wait_until("the container stops", || keepers_of(&s) == 0);
    // Something else takes all but 4 MiB of the disk.
    let file = fill_all_but_4m(&store);
    let out = cluster.srun(&["--container-name=dev", "cat", "/kept"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holding") && stderr(&out).contains("is full"),
        "{}",
        stderr(&out)
    );
    drop(file);
    std::fs::remove_file(store.join("filler")).unwrap();
    let out = cluster.srun(&[
        "--container-name=dev",
        "sh",
        "-c",
        "cat /kept; echo after > /after; cat /after",
    ]);
    assert_eq!(
        stdout(&out),
        "before\nafter\n",
        "{}\n{}",
        stderr(&out),
        cluster.logs()
    );
    // The disk fills while the container runs: its writes fail, in it only.
    let shared = shared_dir(&s, "full");
    let script = "touch /shared/ready; while [ ! -e /shared/go ]; do sleep 0.1; done; \
                  dd if=/dev/zero of=/big bs=1M count=40 conv=fsync 2>/dev/null; echo rc=$?";
    let run = cluster
        .as_user(
            "srun",
            &[
                "--container-name=dev",
                &format!("--container-mounts={}:/shared", shared.display()),
                "sh",
                "-c",
                script,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the step runs", || shared.join("ready").exists());
    let file = fill_all_but_4m(&store);
    std::fs::write(shared.join("go"), "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(!stdout(&out).contains("rc=0"), "{}", stdout(&out));
    wait_until("the container stops", || keepers_of(&s) == 0);
    drop(file);
    std::fs::remove_file(store.join("filler")).unwrap();
    let out = cluster.srun(&[
        "--container-name=dev",
        "sh",
        "-c",
        "rm -f /big; cat /kept /after; echo again > /again; cat /again",
    ]);
    assert_eq!(
        stdout(&out),
        "before\nafter\nagain\n",
        "{}\n{}",
        stderr(&out),
        cluster.logs()
    );
    drop(cluster);
}

/// Allocates `<store>/filler` so that 4 MiB stay free on the store's disk.
fn fill_all_but_4m(store: &Path) -> std::fs::File {
    let stat = nix::sys::statvfs::statvfs(store).unwrap();
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let file = std::fs::File::create(store.join("filler")).unwrap();
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FallocateFlags::empty(),
        0,
        (free - (4 << 20)) as i64,
    )
    .unwrap();
    file
}

/// `--container-save` of a step in a kept container saves that container's
/// files (through the step's view), its mounts left out.
#[test]
fn a_kept_container_is_saved_through_the_steps_view() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let out_dir = shared_dir(&s, "saved-kept");
    std::os::unix::fs::chown(&out_dir, Some(test_user().0), None).unwrap();
    let saved = out_dir.join("dev.sqsh");
    let out = cluster.srun(&[
        "--container-name=dev",
        &format!("--container-image={image}"),
        &format!("--container-save={}", saved.display()),
        &format!("--container-mounts={}:/shared", out_dir.display()),
        "sh",
        "-c",
        "echo saved > /etc/saved",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    wait_until("the squashfs is written", || saved.exists());
    let listing = std::process::Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(&saved)
        .output()
        .unwrap();
    let listing = stdout(&listing);
    assert!(listing.lines().any(|l| l == "/etc/saved"), "{listing}");
    assert!(
        !listing.lines().any(|l| l.starts_with("/shared/")),
        "{listing}"
    );
}

/// `berth ps` shows a user their own kept containers (from the summary root
/// writes for them) and no one else's; root removes one that is not
/// running, and `berth gc` those unused for `container_max_age`.
#[test]
fn users_list_their_kept_containers_and_root_removes_and_collects_them() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    for name in ["dev", "old"] {
        let out = cluster.srun(&[&format!("--container-name={name}"), &image_opt, "true"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = cluster
        .command("srun")
        .args(["--container-name=roots", &image_opt, "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the containers stop", || keepers_of(&s) == 0);
    let names = |out: &std::process::Output| -> Vec<String> {
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)));
        listed
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let out = s.berth_as_user(&["ps", "--json"]);
    assert_eq!(names(&out), ["dev", "old"], "{}", stderr(&out));
    let text = ok(s.berth_as_user(&["ps"]));
    assert!(text.contains("dev") && !text.contains("roots"), "{text}");
    let uid = test_user().0.to_string();
    assert_eq!(
        names(&s.berth(&["ps", "--json", "--user", &uid])),
        ["dev", "old"]
    );
    // Only root removes, and only a container that is not running.
    let out = s.berth_as_user(&["rm", "--container", "dev"]);
    assert!(
        !out.status.success() && stderr(&out).contains("root"),
        "{}",
        stderr(&out)
    );
    let shared = shared_dir(&s, "rm-running");
    let mut running = cluster.srun_in_background(&[
        "--container-name=dev",
        &format!("--container-mounts={}:/shared", shared.display()),
        "sh",
        "-c",
        "touch /shared/started; exec sleep 300",
    ]);
    wait_until("the step runs", || shared.join("started").exists());
    let out = s.berth(&["rm", "--container", "dev", "--user", &uid]);
    assert!(!out.status.success(), "removed while running");
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    let _ = running.kill();
    let _ = running.wait();
    let _ = cluster.scancel(&["-u", &uid]);
    wait_until("the container stops", || keepers_of(&s) == 0);
    ok(s.berth(&["rm", "--container", "dev", "--user", &uid]));
    assert!(!container_dir(&s, "dev").exists());
    assert_eq!(names(&s.berth_as_user(&["ps", "--json"])), ["old"]);
    // gc: containers unused for container_max_age go; their layers stay
    // while one exists.
    ok(s.berth(&["gc", "--max-size", "0"]));
    assert!(container_dir(&s, "old").join("layer.ext4").exists());
    let out = cluster.srun(&["--container-name=old", "echo", "still-works"]);
    assert_eq!(stdout(&out), "still-works\n", "{}", stderr(&out));
    wait_until("the container stops", || keepers_of(&s) == 0);
    s.write_config("container_max_age = \"1s\"\n");
    std::thread::sleep(std::time::Duration::from_secs(2));
    ok(s.berth(&["gc"]));
    assert!(!container_dir(&s, "old").exists());
    assert_eq!(
        names(&s.berth_as_user(&["ps", "--json"])),
        Vec::<String>::new()
    );
}

/// `:no_exec` runs the tasks outside also while the container runs (an
/// earlier step of the job started it), and a user keeps at most
/// `container_max_count` containers.
#[test]
fn no_exec_stays_outside_a_running_container_and_the_count_is_bounded() {
    require_root!();
    let s = Sandbox::new();
    s.write_config("container_max_count = 1\n");
    let image = s.standard_image();
    let cluster = berth_e2e::slurm::Cluster::start(&s.config());
    let dir = shared_dir(&s, "no-exec");
    let text = cluster.batch(
        &dir,
        &format!(
            "srun --container-name=dev --container-image={image} true\n\
             srun --container-name=dev:no_exec sh -c 'echo ${{FROM_IMAGE:-outside}}'\n\
             srun --container-name=second --container-image={image} true || echo second-refused\n",
            image = image.display()
        ),
    );
    assert!(text.contains("outside\n"), "{text}");
    assert!(text.contains("second-refused\n"), "{text}");
    let out = cluster.srun(&[
        "--container-name=second",
        &format!("--container-image={}", image.display()),
        "true",
    ]);
    assert!(
        stderr(&out).contains("container_max_count = 1"),
        "{}",
        stderr(&out)
    );
}

/// `--container-name=NAME:remove` (berth's own mode, for what pyxis users
/// do with `enroot remove`): the user removes their own kept container
/// from a step on the node, also one a step of the same job left running;
/// one another step uses is refused, and the task runs outside.
#[test]
fn a_user_removes_their_own_kept_container_with_a_step() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let dir = shared_dir(&s, "remove");
    let text = cluster.batch(
        &dir,
        &format!(
            "srun --container-name=dev --container-image={image} sh -c 'echo kept > /etc/kept'\n\
             srun --container-name=dev:remove sh -c 'echo ${{FROM_IMAGE:-outside}}'\n\
             srun --container-name=dev:exec true || echo gone\n\
             srun --container-name=dev:remove true || echo nothing-to-remove\n"
        ),
    );
    for line in ["outside", "gone", "nothing-to-remove"] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(!container_dir(&s, "dev").join("container.json").exists());
    // In use by another step: refused, the container stays.
    let mut running = cluster.srun_in_background(&[
        "--container-name=busy",
        &format!("--container-image={image}"),
        &format!("--container-mounts={}:/shared", dir.display()),
        "sh",
        "-c",
        "touch /shared/busy-started; exec sleep 300",
    ]);
    wait_until("the step runs", || dir.join("busy-started").exists());
    let out = cluster.srun(&["--container-name=busy:remove", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    let _ = running.kill();
    let _ = running.wait();
    assert!(container_dir(&s, "busy").join("container.json").exists());
}
