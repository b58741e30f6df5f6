//! Image layers against the real store: hostile tars are refused (or
//! neutralised) and leave the store clean; corrupt blobs are caught.

use berth_e2e::*;

/// An image whose top layer is `hostile` over the busybox base.
fn image_with_top_layer(s: &Sandbox, name: &str, hostile: Layer) -> String {
    s.image_on_base(name, hostile).to_str().unwrap().to_string()
}

fn store_entries(s: &Sandbox, sub: &str) -> usize {
    std::fs::read_dir(s.store().join(sub))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn assert_refused(s: &Sandbox, image: &str, needle: &str) {
    for rootless in [false, true] {
        let out = if rootless {
            s.berth_as_user(&["run", image, "true"])
        } else {
            s.berth(&["run", image, "true"])
        };
        assert_eq!(
            out.status.code(),
            Some(125),
            "rootless={rootless}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.starts_with("berth: layer sha256:") && err.contains(needle),
            "rootless={rootless}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // Only the good base layer made it into the store; nothing half-written.
    assert_eq!(store_entries(s, "layers/sha256"), 1);
    assert_eq!(store_entries(s, "tmp"), 0);
    let user_store = s.user_home().join(".local/share/berth");
    assert_eq!(
        std::fs::read_dir(user_store.join("layers/sha256"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(user_store.join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn path_escape_is_refused_and_store_stays_clean() {
    require_root!();
    let s = Sandbox::new();
    let image = image_with_top_layer(
        &s,
        "escape",
        Layer::new().file("ok", b"fine", 0o644).file(
            "../../../../tmp/berth-escaped",
            b"pwned",
            0o644,
        ),
    );
    assert_refused(&s, &image, "escapes the layer");
    assert!(!std::path::Path::new("/tmp/berth-escaped").exists());
}

#[test]
fn write_through_symlink_is_refused() {
    require_root!();
    let s = Sandbox::new();
    let target = s.path().join("host-target");
    std::fs::create_dir(&target).unwrap();
    let hostile =
        Layer::new()
            .symlink("evil", target.to_str().unwrap())
            .file("evil/pwned", b"pwned", 0o644);
    let image = image_with_top_layer(&s, "symlink", hostile);
    assert_refused(&s, &image, "passes through the symlink");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    // Relative symlinks climbing out are refused the same way.
    let s = Sandbox::new();
    let hostile = Layer::new()
        .dir("a", 0o755)
        .symlink("a/up", "../../../../../../tmp")
        .file("a/up/berth-pwned", b"x", 0o644);
    let image = image_with_top_layer(&s, "symlink2", hostile);
    assert_refused(&s, &image, "passes through the symlink");
    assert!(!std::path::Path::new("/tmp/berth-pwned").exists());
}

#[test]
fn hardlink_out_of_the_layer_is_refused() {
    require_root!();
    for (name, target) in [
        ("dotdot", "../../../../etc/passwd"),
        ("absolute", "/etc/shadow"),
    ] {
        let s = Sandbox::new();
        let image = image_with_top_layer(&s, name, Layer::new().hardlink("stolen", target));
        assert_refused(&s, &image, "does not point at a file in this layer");
    }
}

#[test]
fn device_nodes_are_dropped_and_setuid_stripped() {
    require_root!();
    let s = Sandbox::new();
    let layer = Layer::new()
        .dir("dev", 0o755)
        .char_device("dev/mem", 1, 1)
        .char_device("evil-kmsg", 1, 11)
        .file("bin/suid-extra", b"#!/bin/sh\n", 0o6755);
    let image = image_with_top_layer(&s, "devices", layer);
    let out = ok(s.berth(&[
        "run",
        &image,
        "sh",
        "-c",
        "test -e /evil-kmsg && echo NODE; stat -c %a /bin/suid-extra",
    ]));
    assert_eq!(out, "755\n");
    let layer_dirs: Vec<_> = std::fs::read_dir(s.store().join("layers/sha256"))
        .unwrap()
        .flatten()
        .collect();
    assert!(layer_dirs
        .iter()
        .all(|d| !d.path().join("evil-kmsg").exists()));
}

#[test]
fn corrupt_blob_is_refused_with_the_layer_named() {
    require_root!();
    let s = Sandbox::new();
    let image = s.standard_image();
    // Flip a byte in the biggest blob (the base layer).
    let blobs = image.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap();
    let mut data = std::fs::read(biggest.path()).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(biggest.path(), data).unwrap();
    let out = s.berth(&["run", image.to_str().unwrap(), "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    let digest = biggest.file_name().to_string_lossy().into_owned();
    assert!(err.contains(&digest), "the error names the layer: {err}");
    assert_eq!(store_entries(&s, "layers/sha256"), 0);
    assert_eq!(store_entries(&s, "tmp"), 0);
}

#[test]
fn plain_rootfs_directory_runs() {
    require_root!();
    let s = Sandbox::new();
    let rootfs = s.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let args = [
        "run",
        rootfs.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo from-dir",
    ];
    assert_eq!(ok(s.berth(&args)), "from-dir\n");
    assert_eq!(ok(s.berth_as_user(&args)), "from-dir\n");
}

#[test]
fn fifty_layers_mount_in_one_overlay() {
    require_root!();
    let s = Sandbox::new();
    let dir = s.path().join("many");
    let mut layers = vec![(base_layer().finish(), Compression::Gzip)];
    for i in 0..50 {
        layers.push((
            Layer::new()
                .file(&format!("layer-{i:02}"), format!("{i}\n").as_bytes(), 0o644)
                .finish(),
            Compression::None,
        ));
    }
    write_layout(&dir, layers, &RunConfig::default());
    let image = dir.to_str().unwrap();
    let out = ok(s.berth(&[
        "run",
        image,
        "sh",
        "-c",
        "ls / | grep -c layer-; cat /layer-49",
    ]));
    assert_eq!(out, "50\n49\n");
    let out = ok(s.berth_as_user(&["run", image, "sh", "-c", "ls / | grep -c layer-"]));
    assert_eq!(out, "50\n");
}

#[test]
fn image_with_proc_symlink_is_refused() {
    require_root!();
    let s = Sandbox::new();
    let image = image_with_top_layer(&s, "proc-link", Layer::new().symlink("proc", "/etc"));
    let out = s.berth(&["run", &image, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("/proc is a symlink"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kill_9_during_unpack_leaves_no_trusted_layer_and_next_run_finishes() {
    require_root!();
    let s = Sandbox::new();
    // A layer big enough that extraction takes a while: 1500 files of 64 KiB.
    let mut big = Layer::new().dir("big", 0o755);
    for i in 0..1500u32 {
        let data: Vec<u8> = (0..65536u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        big = big.file(&format!("big/f{i}"), &data, 0o644);
    }
    let image = image_with_top_layer(&s, "big", big);
    let mut child = s.berth_command(&["run", &image, "true"]).spawn().unwrap();
    let tmp = s.store().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Wait until the big layer is half-way extracted.
    loop {
        let partial = std::fs::read_dir(&tmp)
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_dir(e.path().join("big"))
                        .map(|b| b.count() > 200)
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "extraction never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "berth finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Only the base layer is trusted; the half-written one stays in tmp/.
    assert_eq!(store_entries(&s, "layers/sha256"), 1);
    assert_eq!(store_entries(&s, "tmp"), 1);
    // The next run removes the leftover and finishes the work.
    let out = ok(s.berth(&["run", &image, "sh", "-c", "ls /big | wc -l"]));
    assert_eq!(out.trim(), "1500");
    assert_eq!(store_entries(&s, "layers/sha256"), 2);
    assert_eq!(store_entries(&s, "tmp"), 0);
}
