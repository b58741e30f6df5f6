//! Paths a user names are opened with the user's rights, once, and used by descriptor (findings 3, 4, 10, the no-oracle rule), also through srun.

use super::*;

/// A user's OCI layout whose blobs are symlinks: to a root-only file (the
/// error printed its sha256) or to a root-only copy of a real layer (it
/// was extracted into the store and shown in the container).
#[test]
fn symlinked_layout_blobs_are_refused() {
    needs_root();
    let s = Sandbox::new();
    let closed = root_only_dir(&s, "closed");
    let secret = closed.join("secret.json");
    std::fs::write(&secret, br#"{"secret": "root's"}"#).unwrap();
    let secret_hex = sha256_file(&secret);

    // The top layer's blob lives only where root can read it.
    let layout = layout_with_root_only_top_layer(&s, &closed);
    let out = run_for_user(&s, &[layout.to_str().unwrap(), "cat", "/etc/motd"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("symlink"),
        "the refusal names the symlink: {}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("root-only tar"));
    let store_layers = s.store().join("layers/sha256");
    assert!(
        count_entries(&store_layers) <= 1,
        "the symlinked layer reached the store"
    );

    // A config blob symlinked to a root-only file: nothing of it is told.
    let layout2 = s.path().join("layout2");
    write_layout(
        &layout2,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig::default(),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout2.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout2.join("blobs/sha256").join(&manifest_hex)).unwrap(),
    )
    .unwrap();
    let config_hex = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let config_blob = layout2.join("blobs/sha256").join(&config_hex);
    std::fs::remove_file(&config_blob).unwrap();
    std::os::unix::fs::symlink(&secret, &config_blob).unwrap();
    chown_tree(&layout2);
    let out = run_for_user(&s, &[layout2.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains(&secret_hex),
        "the error tells the root-only file's digest: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
}

/// A root filesystem directory image was checked as the user, then mounted
/// by path as root: swapping it for a symlink to a root-only directory in
/// between gave the user that directory. Now the directory is opened once
/// with the user's rights and mounted from that descriptor. Mount sources
/// (`-m`) get the same treatment and the same attack.
#[test]
fn a_directory_swapped_for_a_symlink_never_shows_root_only_files() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let closed = root_only_dir(&s, "closed");
    let (race, mine, link) = directory_race(&s, &closed);
    // A symlink to / for the mount source: the host's root with its /proc
    // and /dev, which the mount policy refuses.
    let to_root = race.join("to-root");
    std::os::unix::fs::symlink("/", &to_root).unwrap();
    chown_tree(&race);
    let mount = format!("{}:/m", mine.display());
    let as_image = [mine.to_str().unwrap(), "/bin/busybox", "cat", "/marker"];
    let as_mount = ["-m", &mount, image.to_str().unwrap(), "cat", "/m/marker"];
    let host_root_check = "cat /m/marker; test -d /m/proc/self && echo ROOT-ONLY-SECRET";
    let as_root_mount = [
        "-m",
        &mount,
        image.to_str().unwrap(),
        "sh",
        "-c",
        host_root_check,
    ];
    for (args, link) in [
        (&as_image[..], &link),
        (&as_mount[..], &link),
        (&as_root_mount[..], &to_root),
    ] {
        let swapper = Swapper::start(&mine, link, Some(64));
        let mut runs = 0;
        let mut own = 0;
        let enough = |runs: usize, own: usize| {
            runs >= 400 || (runs >= 40 && own > 0 && swapper.swaps() >= 5000)
        };
        while !enough(runs, own) {
            runs += 1;
            let text = stdout(&run_for_user(&s, args));
            assert!(
                !text.contains("ROOT-ONLY-SECRET"),
                "{args:?}, run {runs}: the user saw a root-only directory"
            );
            if text.contains("mine") {
                own += 1;
            }
        }
        let swapped = swapper.stop(&mine, link, true);
        assert!(swapped >= 5000, "only {swapped} swaps in {runs} runs");
        assert!(own > 0, "{args:?}: no run used the user's own directory");
    }
}

/// Root made the working directory following `/proc/PID/root`: a user
/// created a directory inside another user's running container. Now no
/// magic link is followed.
#[test]
fn the_working_directory_never_leads_into_another_container() {
    needs_root();
    let (s, cluster, image) = cluster_with_standard_image();
    // Another user's container (root's own), running.
    let mut other = s
        .berth_command(&["run", &image, "berth-probe", "sleep", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let berth_pid = other.id();
    let init = std::fs::read_to_string(format!("/proc/{berth_pid}/task/{berth_pid}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the container's init")
        .to_string();
    let target = format!("/proc/{init}/root/tmp/planted-by-a-user");
    let workdir = format!("--container-workdir={target}");
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[&image_opt, &workdir, "pwd"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        !Path::new(&target).exists(),
        "a directory was made in another container"
    );
}

/// Root's errors for a path the user cannot reach are the same whether or
/// not it exists: root's answers tell nothing the user could not find out.
#[test]
fn no_oracle_for_paths_the_user_cannot_reach() {
    needs_root();
    let s = Sandbox::new();
    let closed = root_only_dir(&s, "closed");
    std::fs::write(closed.join("there.sqsh"), b"hsqs").unwrap();
    let message = |name: &str| {
        let path = closed.join(name);
        let out = run_for_user(&s, &[path.to_str().unwrap(), "true"]);
        assert!(!out.status.success());
        stderr(&out).replace(name, "NAME")
    };
    assert_eq!(message("there.sqsh"), message("absent.sqsh"));
    let out = run_for_user(&s, &["/etc/shadow", "true"]);
    let shadow = stderr(&out).replace("/etc/shadow", "PATH");
    let out = run_for_user(&s, &["/etc/no-such-file", "true"]);
    let missing = stderr(&out).replace("/etc/no-such-file", "PATH");
    assert_eq!(shadow, missing);
}

/// The same attacks through the Slurm plugin (its helper resolves images
/// the way `berth run --user` does, as root for the job's user): a layout
/// blob symlinked to a root-only layer, a directory image swapped for a
/// symlink to a root-only directory while steps start, a squashfs swapped
/// for a trojan while steps import it, and a root-only path that answers
/// as a missing one.
#[test]
fn the_plugin_opens_the_jobs_images_with_the_users_rights() {
    needs_root();
    let (s, cluster, _image) = cluster_with_standard_image();
    let closed = root_only_dir(&s, "closed");

    // 3: a symlinked layer blob.
    let layout = layout_with_root_only_top_layer(&s, &closed);
    let out = cluster.srun(&[
        &format!("--container-image={}", layout.display()),
        "cat",
        "/etc/motd",
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));

    // No oracle: a root-only path answers as a missing one.
    std::fs::write(closed.join("there.sqsh"), b"hsqs").unwrap();
    let message = |name: &str| {
        let out = cluster.srun(&[
            &format!("--container-image={}", closed.join(name).display()),
            "true",
        ]);
        assert!(!out.status.success());
        stderr(&out)
            .lines()
            .find(|l| l.contains("berth:"))
            .unwrap_or_default()
            .replace(name, "NAME")
    };
    assert_eq!(message("there.sqsh"), message("absent.sqsh"));

    // 4 and 2: swaps while steps start.
    let (race, mine, link) = directory_race(&s, &closed);
    let squash = |name: &str| {
        let file = race.join(format!("{name}.sqsh"));
        squashfs_image(&s, &file, name);
        file
    };
    let (good, trojan) = (squash("good"), squash("trojan"));
    let (good_hex, trojan_hex) = (
        sha256_of(&std::fs::read(&good).unwrap()),
        sha256_of(&std::fs::read(&trojan).unwrap()),
    );
    chown_tree(&race);
    let layers = s.store().join("layers/sha256");
    for (image, other) in [(&mine, &link), (&good, &trojan)] {
        let swapper = Swapper::start(image, other, Some(32));
        for _ in 0..25 {
            let out = cluster.srun(&[
                &format!("--container-image={}", image.display()),
                "/bin/busybox",
                "cat",
                "/marker",
            ]);
            assert!(
                !stdout(&out).contains("ROOT-ONLY-SECRET"),
                "a step saw a root-only directory"
            );
            for (hex, marker) in [(&good_hex, "good"), (&trojan_hex, "trojan")] {
                if let Ok(text) = std::fs::read_to_string(layers.join(hex).join("marker")) {
                    assert_eq!(
                        text, marker,
                        "the store holds other content under {marker}'s digest"
                    );
                }
            }
        }
        let is_dir = image == &mine;
        let swaps = swapper.stop(image, other, is_dir);
        assert!(swaps > 500, "only {swaps} swaps");
    }
}

/// The directory race's pieces: a root filesystem the user owns
/// (`race/img`, marker "mine") and a symlink the user owns (`race/link`) to
/// a root filesystem only root may reach (marker "ROOT-ONLY-SECRET").
fn directory_race(s: &Sandbox, closed: &Path) -> (PathBuf, PathBuf, PathBuf) {
    rootfs_dir(&closed.join("victim"), "ROOT-ONLY-SECRET");
    let race = user_dir(s, "race");
    let mine = race.join("img");
    rootfs_dir(&mine, "mine");
    let link = race.join("link");
    std::os::unix::fs::symlink(closed.join("victim"), &link).unwrap();
    (race, mine, link)
}
