//! Image layers against the real store: hostile tars are refused (or
//! neutralised) and leave the store clean; corrupt blobs are caught.

use berth_e2e::*;

/// Writes an image whose top layer is `hostile` over the busybox base.
fn image_with_top_layer(s: &Sandbox, name: &str, hostile: Layer) -> String {
    let dir = s.path().join(name);
    write_layout(
        &dir,
        vec![
            (base_layer().finish(), Compression::Gzip),
            (hostile.finish(), Compression::Gzip),
        ],
        &RunConfig::default(),
    );
    dir.to_str().unwrap().to_string()
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
    let out = ok(s.berth(&[
        "run",
        rootfs.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo from-dir",
    ]));
    assert_eq!(out, "from-dir\n");
    let out = ok(s.berth_as_user(&[
        "run",
        rootfs.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo from-dir",
    ]));
    assert_eq!(out, "from-dir\n");
}
