//! `--container-save`: only what the user may read, never a mount, only from a berth keeper (findings 1 and 9).

use super::*;

/// `--container-save` over `--container-image=/etc` once packed
/// /etc/shadow and munge's key (mksquashfs ran as root over the container),
/// a mount with a space in its path escaped the exclusion list, and the
/// temporary file was 0644 in the store. Now mksquashfs runs as the user
/// over the container's root mount alone.
#[test]
fn container_save_packs_only_what_the_user_may_read_and_no_mount() {
    needs_root();
    let (s, cluster, _image) = cluster_with_standard_image();
    let out_dir = user_dir(&s, "saved");
    let spaced = user_dir(&s, "with space");
    std::fs::write(spaced.join("mounted-file"), "from a bind mount\n").unwrap();
    chown_tree(&spaced);
    let saved = out_dir.join("etc.sqsh");
    let mounts = format!(
        "--container-mounts=/bin/busybox:/busybox:ro,{}:/with space",
        spaced.display()
    );
    let save = format!("--container-save={}", saved.display());
    let out = cluster.srun(&[
        "--chdir=/",
        "--container-image=/etc",
        &mounts,
        &save,
        "/busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    wait_until("the squashfs is written", || saved.exists());
    let meta = std::fs::metadata(&saved).unwrap();
    assert_eq!(meta.uid(), test_user().0, "the saved file is the user's");
    let listing = stdout(
        &Command::new("unsquashfs")
            .args(["-l", "-d", ""])
            .arg(&saved)
            .output()
            .unwrap(),
    );
    assert!(
        listing.contains("/passwd"),
        "the save holds /etc: {listing}"
    );
    assert!(
        !listing.contains("mounted-file"),
        "a bind mount was saved: {listing}"
    );
    let extracted = s.path().join("extracted");
    let status = Command::new("unsquashfs")
        .args(["-no-xattrs", "-d"])
        .arg(&extracted)
        .arg(&saved)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let shadow = std::fs::read(extracted.join("shadow")).unwrap_or_default();
    let real = std::fs::read("/etc/shadow").unwrap();
    assert!(
        shadow.is_empty() && !real.is_empty(),
        "root-only /etc/shadow was packed ({} bytes)",
        shadow.len()
    );
    let key = std::fs::read(extracted.join("munge/munge.key")).unwrap_or_default();
    assert!(key.is_empty(), "munge's key was packed");
    let leftovers: Vec<_> = std::fs::read_dir(s.store().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "left in the store: {leftovers:?}");
    assert!(
        !std::fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("berth-save")),
        "a temporary file was left beside the save"
    );
}

/// From a second outside review: `berth slurm-save` joined whatever mount
/// namespace the given pid had (a pid the keeper left could be the user's
/// own `unshare` by then), and a FIFO was accepted as a mount source. Now
/// the save only enters a berth keeper (root's, running berth, pinned by a
/// pidfd), and mount sources are files or directories.
#[test]
fn save_enters_only_a_keeper_and_mounts_are_files_or_directories() {
    needs_root();
    let s = Sandbox::new();
    let out_dir = user_dir(&s, "out");
    let (uid, gid) = test_user();
    let mut users_own = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("30")
            .uid(uid)
            .gid(gid)
            .spawn()
            .unwrap()
    };
    let target = out_dir.join("x.sqsh");
    // Its real start time: only what the process is can refuse it.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", users_own.id())).unwrap();
    let started = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let out = s.berth(&[
        "slurm-save",
        "--pid",
        &users_own.id().to_string(),
        "--started",
        &started,
        "--output",
        target.to_str().unwrap(),
        "--user",
        &format!("{uid}:{gid}"),
    ]);
    let _ = users_own.kill();
    let _ = users_own.wait();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not the container's keeper"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_entries(&out_dir), 0, "something was written");

    let fifo = out_dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    chown_tree(&out_dir);
    let image = s.standard_image();
    let mount = format!("{}:/f", fifo.display());
    let out = run_for_user(&s, &["-m", &mount, image.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
}
