//! Imports of docker-archive and squashfs files, `berth gc`, and a full disk.

use std::process::Stdio;
use std::time::Duration;

use berth_e2e::registry::Registry;
use berth_e2e::*;

use super::pushed;

#[test]
fn docker_archive_and_squashfs_imports() {
    require_root!();
    let s = Sandbox::new();
    // docker-archive via skopeo (docker images have no zstd layers).
    let layout = s.path().join("gzip-image");
    let top = Layer::new().file("etc/motd", b"layer2\n", 0o644);
    let run = RunConfig {
        cmd: vec!["sh".into(), "-c".into(), "echo default-cmd; pwd".into()],
        working_dir: Some("/work".into()),
        ..RunConfig::default()
    };
    write_layout(
        &layout,
        vec![
            (base_layer().finish(), Compression::Gzip),
            (top.finish(), Compression::None),
        ],
        &run,
    );
    let archive = s.path().join("image.tar");
    let status = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!(
            "docker-archive:{}:test/archived:v1",
            archive.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        ok(s.berth(&["import", archive.to_str().unwrap(), "--name", "archived"])).trim(),
        "archived"
    );
    assert_eq!(
        ok(s.berth(&["run", "archived", "cat", "/etc/motd"])),
        "layer2\n"
    );
    assert_eq!(
        ok(s.berth(&["run", archive.to_str().unwrap()])),
        "default-cmd\n/work\n"
    );
    // squashfs from a root filesystem directory (with a device node and a setuid file to neutralise).
    let rootfs = s.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let tar_path = s.path().join("base.tar");
    std::fs::write(
        &tar_path,
        base_layer()
            .file("etc/motd", b"from squashfs\n", 0o644)
            .file("bin/suid", b"#!/bin/sh\n", 0o4755)
            .finish(),
    )
    .unwrap();
    assert!(std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap()
        .success());
    assert!(std::process::Command::new("mknod")
        .arg(rootfs.join("kmem"))
        .args(["c", "1", "2"])
        .status()
        .unwrap()
        .success());
    let sqsh = s.path().join("image.sqsh");
    let status = std::process::Command::new("mksquashfs")
        .arg(&rootfs)
        .arg(&sqsh)
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        ok(s.berth(&["import", sqsh.to_str().unwrap(), "--name", "squashed"])).trim(),
        "squashed"
    );
    let out = ok(s.berth(&[
        "run",
        "squashed",
        "sh",
        "-c",
        "cat /etc/motd; test -e /kmem && echo KMEM; stat -c %a /bin/suid",
    ]));
    assert_eq!(out, "from squashfs\n755\n");
    let out = ok(s.berth_as_user(&["run", sqsh.to_str().unwrap(), "cat", "/etc/motd"]));
    assert_eq!(out, "from squashfs\n");
    let images = ok(s.berth(&["images"]));
    assert!(
        images.contains("archived") && images.contains("squashed") && images.contains("squashfs"),
        "{images}"
    );
}

#[test]
fn gc_removes_least_recently_used_but_never_a_running_containers_layers() {
    require_root!();
    let s = Sandbox::new();
    let layout_a = s.standard_image();
    ok(s.berth(&["import", layout_a.to_str().unwrap(), "--name", "a"]));
    let layout_b = s.path().join("b");
    write_layout(
        &layout_b,
        vec![(
            Layer::new().file("only-b", b"b", 0o644).finish(),
            Compression::Gzip,
        )],
        &RunConfig::default(),
    );
    ok(s.berth(&["import", layout_b.to_str().unwrap(), "--name", "b"]));
    // A layer no image refers to (a layout run from disk).
    let layout_c = s.path().join("c");
    write_layout(
        &layout_c,
        vec![
            (base_layer().finish(), Compression::Gzip),
            (
                Layer::new().file("only-c", b"c", 0o644).finish(),
                Compression::None,
            ),
        ],
        &RunConfig::default(),
    );
    ok(s.berth(&["run", layout_c.to_str().unwrap(), "true"]));
    assert_eq!(count_entries(&s.store().join("layers/sha256")), 6);
    // Under the limit nothing goes: the store is a cache.
    let out = ok(s.berth(&["gc", "--max-size", "10G"]));
    assert!(out.starts_with("removed 0 layers and 0 images"), "{out}");
    // Just over it, the layers no image refers to go first: a limit of what
    // the images use removes exactly c's layers.
    let layer_bytes = |digest: &str| -> u64 {
        let meta = s
            .store()
            .join("layers/meta")
            .join(format!("{}.json", digest.trim_start_matches("sha256:")));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(meta).unwrap()).unwrap()["bytes"]
            .as_u64()
            .unwrap()
    };
    let referenced: std::collections::BTreeSet<String> =
        std::fs::read_dir(s.store().join("images"))
            .unwrap()
            .flatten()
            .flat_map(|e| {
                let record: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                record["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
    let limit: u64 = referenced.iter().map(|d| layer_bytes(d)).sum();
    let out = ok(s.berth(&["gc", "--max-size", &limit.to_string()]));
    assert!(out.starts_with("removed 2 layers and 0 images"), "{out}");
    assert_eq!(count_entries(&s.store().join("layers/sha256")), 4);
    let images = ok(s.berth(&["images"]));
    assert!(
        images.contains("\na ") && images.contains("\nb "),
        "{images}"
    );
    // With a container of `a` running, --max-size 0 removes `b` only.
    let mut running = s
        .berth_command(&["run", "a", "berth-probe", "sleep", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(running.stdout.as_mut().unwrap(), &mut ready).unwrap();
    let out = ok(s.berth(&["gc", "--max-size", "0"]));
    assert!(out.contains("1 images"), "{out}");
    let images = ok(s.berth(&["images"]));
    assert!(
        images.contains("\na ") && !images.contains("\nb "),
        "{images}"
    );
    assert_eq!(count_entries(&s.store().join("layers/sha256")), 3);
    running.kill().unwrap();
    running.wait().unwrap();
    // Once it is gone (its init dies a moment after berth), everything can go.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = ok(s.berth(&["gc", "--max-size", "0"]));
    while !out.contains("removed 3 layers and 1 images") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        out = ok(s.berth(&["gc", "--max-size", "0"]));
    }
    assert!(out.contains("removed 3 layers and 1 images"), "{out}");
    assert_eq!(count_entries(&s.store().join("layers/sha256")), 0);
    assert_eq!(count_entries(&s.store().join("tmp")), 0);
    // rm of an unknown name is an error.
    let o = s.berth(&["rm", "nothing-here"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("no such image"), "{}", stderr(&o));
}

/// A small tmpfs of the test's own, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "berth-test"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a test tmpfs");
        SmallDisk(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_a_bigger_disk_finishes() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    pushed(&s, &registry, "big/img:v1");
    // The image unpacks to ~13 MiB: a 6 MiB store fills up half-way.
    let disk = SmallDisk::mount(s.store(), "6m");
    let reference = format!("{}/big/img:v1", registry.host());
    let out = s.berth(&["pull", &reference]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_entries(&s.store().join("images")), 0);
    assert_eq!(
        count_entries(&s.store().join("tmp")),
        0,
        "nothing half-written stays"
    );
    let kept = count_entries(&s.store().join("layers/sha256"));
    assert!(kept < 3, "only whole layers that fit are kept ({kept})");
    drop(disk);
    let _disk = SmallDisk::mount(s.store(), "64m");
    assert_eq!(
        ok(s.berth(&["run", &reference, "cat", "/etc/motd"])),
        "layer2\n"
    );
}
