//! Hostile input costs bounded work, disk, memory and stack (finding 12, and the outside reviews).

use super::*;

/// Hostile input costs bounded work and is refused with a clear message: a
/// layer 4000 directories deep, a sparse 3 GB index.json, a FIFO as the
/// image (it hung root forever).
#[test]
fn hostile_images_are_refused_without_unbounded_work() {
    needs_root();
    let s = Sandbox::new();
    let deep_path = vec!["d"; 4000].join("/");
    let mut deep = Layer::new();
    let mut path = String::new();
    for part in deep_path.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        deep = deep.dir(&path, 0o755);
    }
    let image = s.image_on_base("deep", deep);
    chown_tree(&image);
    let out = run_for_user(&s, &[image.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("store.max_layer_depth"),
        "{}",
        stderr(&out)
    );

    let sparse = user_dir(&s, "sparse");
    std::fs::write(
        sparse.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = std::fs::File::create(sparse.join("index.json")).unwrap();
    index.set_len(3 << 30).unwrap();
    chown_tree(&sparse);
    let out = run_for_user(&s, &[sparse.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("index.json"), "{}", stderr(&out));
    assert!(stderr(&out).contains("MiB"), "{}", stderr(&out));

    let fifo_dir = user_dir(&s, "fifo");
    let fifo = fifo_dir.join("image.sqsh");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    chown_tree(&fifo_dir);
    let user = user_flag();
    let mut child = s
        .berth_command(&["run", "--user", &user, fifo.to_str().unwrap(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth hangs on a FIFO named as the image");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
}

/// More hostile input, from an outside review of this build: a layer of
/// zeros that compresses to nothing filled the store's disk (written
/// densely), a layer larger than the store, a sparse "squashfs" copied
/// whole into the store, a GNU long name claiming gigabytes (the tar
/// parser buffered it), a directory image with a mount inside (what the
/// mount hides would show), and a chain of nested indexes.
#[test]
fn hostile_images_cost_no_disk_memory_or_stack() {
    needs_root();
    let s = Sandbox::new();
    // 64 MiB of zeros: written as a hole.
    let zeros = vec![0u8; 64 << 20];
    let image = s.image_on_base("zeros", Layer::new().file("zeros", &zeros, 0o644));
    chown_tree(&image);
    ok(run_for_user(&s, &[image.to_str().unwrap(), "true"]));
    let allocated: u64 = std::fs::read_dir(s.store().join("layers/sha256"))
        .unwrap()
        .flatten()
        .filter_map(|layer| std::fs::metadata(layer.path().join("zeros")).ok())
        .map(|m| m.blocks() * 512)
        .sum();
    assert!(
        allocated < 1 << 20,
        "64 MiB of zeros took {allocated} bytes of disk"
    );
    // The same layer is refused by a store smaller than it.
    let small = Sandbox::new();
    small.write_config("max_size = \"32M\"\n");
    let image = small.image_on_base("zeros", Layer::new().file("zeros", &zeros, 0o644));
    chown_tree(&image);
    let out = run_for_user(&small, &[image.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("store.max_size"), "{}", stderr(&out));

    let files = user_dir(&s, "files");
    // A "squashfs" of 4 KiB data and a 2 GiB hole.
    let sparse = files.join("sparse.sqsh");
    let mut head = b"hsqs".to_vec();
    head.resize(4096, 1);
    std::fs::write(&sparse, &head).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    // A docker-archive whose first entry is a GNU long name of 3 GiB.
    let long = files.join("long.tar");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(3 << 30);
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_cksum();
    let mut data = header.as_bytes().to_vec();
    data.resize(9 << 20, b'a'); // past the 8 MiB the parser may read
    std::fs::write(&long, &data).unwrap();
    chown_tree(&files);
    for (file, expected) in [(&sparse, "sparse"), (&long, "long name")] {
        let out = run_for_user(&s, &[file.to_str().unwrap(), "true"]);
        assert!(!out.status.success(), "{expected}: accepted");
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    assert_eq!(
        count_entries(&s.store().join("tmp")),
        0,
        "a copy was left in the store"
    );

    // A directory image with a mount inside it.
    let dir = user_dir(&s, "mounted");
    rootfs_dir(&dir, "mine");
    std::fs::create_dir(dir.join("hidden")).unwrap();
    std::fs::write(dir.join("hidden/under-the-mount"), "HIDDEN").unwrap();
    chown_tree(&dir);
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(dir.join("hidden"))
        .status()
        .unwrap();
    assert!(mounted.success());
    let out = run_for_user(
        &s,
        &[
            dir.to_str().unwrap(),
            "/bin/busybox",
            "cat",
            "/hidden/under-the-mount",
        ],
    );
    let _ = Command::new("umount").arg(dir.join("hidden")).status();
    assert!(
        !stdout(&out).contains("HIDDEN"),
        "a mount's hidden files showed"
    );
    assert!(stderr(&out).contains("mounted inside"), "{}", stderr(&out));

    // Twenty nested indexes.
    let nested = user_dir(&s, "nested");
    write_layout(
        &nested,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig::default(),
    );
    for _ in 0..20 {
        let index = std::fs::read(nested.join("index.json")).unwrap();
        let hex = sha256_of(&index);
        std::fs::write(nested.join("blobs/sha256").join(&hex), &index).unwrap();
        let wrapper = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"), "size": index.len()}]});
        std::fs::write(nested.join("index.json"), wrapper.to_string()).unwrap();
    }
    chown_tree(&nested);
    let out = run_for_user(&s, &[nested.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nested indexes"), "{}", stderr(&out));
}
