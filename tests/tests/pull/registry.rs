//! Pulls from the loopback registry: references, tokens, multi-arch
//! indexes, concurrent and killed pulls, corrupt and hostile layers, errors.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::registry::{Registry, TokenGate};
use berth_e2e::*;

use super::{pushed, use_netrc};

#[test]
fn pull_by_tag_digest_and_pyxis_form_then_run() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    pushed(&s, &registry, "test/img:v1");
    let reference = format!("{}/test/img:v1", registry.host());
    let out = s.berth(&["pull", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!("pulled {reference}: 3 layers (0 cached)")),
        "{}",
        stderr(&out)
    );
    let images = ok(s.berth(&["images"]));
    assert!(
        images.contains(&reference) && images.contains("registry"),
        "{images}"
    );
    // Users cannot write the shared store.
    let (uid, gid) = test_user();
    for dir in ["layers/sha256", "images", "tmp", "locks"] {
        let probe = s.store().join(dir).join("user-was-here");
        let status = std::process::Command::new("touch")
            .arg(&probe)
            .uid(uid)
            .gid(gid)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the test user could write {dir}");
    }
    // --quiet says nothing.
    let quiet = s.berth(&["-q", "pull", &reference]);
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "{}",
        stderr(&quiet)
    );
    assert_eq!(
        ok(s.berth(&["run", &reference])),
        "default-cmd yes\n/work\n"
    );
    // A second pull fetches nothing.
    let again = s.berth(&["pull", &reference]);
    assert!(
        stderr(&again).contains("3 layers (3 cached), 0.0 MiB"),
        "{}",
        stderr(&again)
    );
    // By digest, and in pyxis's REGISTRY#IMAGE form.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read_dir(s.store().join("images"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read(e.path()).unwrap())
            .next()
            .unwrap(),
    )
    .unwrap();
    let digest = record["manifest_digest"].as_str().unwrap();
    let by_digest = format!("{}/test/img@{digest}", registry.host());
    assert_eq!(
        ok(s.berth(&["run", &by_digest, "cat", "/etc/motd"])),
        "layer2\n"
    );
    let pyxis = format!("{}#test/img:v1", registry.host());
    assert_eq!(ok(s.berth(&["run", &pyxis, "cat", "/data/new"])), "new\n");
    // Pull on first use, as an unprivileged user into their own store.
    let out = ok(s.berth_as_user(&["run", &reference, "berth-probe", "ids"]));
    assert!(out.starts_with("uid="), "{out}");
    assert_eq!(
        count_entries(&s.user_home().join(".local/share/berth/layers/sha256")),
        3
    );
}

#[test]
fn token_auth_with_credentials_from_a_netrc_file() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    pushed(&s, &registry, "private/img:v1");
    let gate = TokenGate::start(&registry, "alice", "s3cret");
    let reference = format!("{}/private/img:v1", gate.host());
    // No credentials: refused with a clear line.
    let out = s.berth(&["pull", &reference]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("berth: image {reference}:"))
            && (err.contains("authoriz") || err.contains("authentication")),
        "{err}"
    );
    // A wrong password is refused too.
    use_netrc(&s, &gate.host(), "alice", "wrong");
    assert_eq!(s.berth(&["pull", &reference]).status.code(), Some(125));
    // The right one works, through the bearer-token flow.
    use_netrc(&s, &gate.host(), "alice", "s3cret");
    let out = s.berth(&["pull", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ok(s.berth(&["run", &reference, "cat", "/etc/motd"])),
        "layer2\n"
    );
    // enroot's USER@REGISTRY#IMAGE picks the login.
    let s2 = Sandbox::new();
    let docker_config = s2.path().join("config.json");
    std::fs::write(
        &docker_config,
        r#"{"auths": {"HOST": {"auth": "YWxpY2U6czNjcmV0"}}}"#.replace("HOST", &gate.host()),
    )
    .unwrap();
    s2.write_config(&format!(
        "[registry]\ncredentials = [\"{}\"]\n",
        docker_config.display()
    ));
    let enroot_form = format!("alice@{}#private/img:v1", gate.host());
    assert_eq!(
        ok(s2.berth(&["run", &enroot_form, "cat", "/etc/motd"])),
        "layer2\n"
    );
}

#[test]
fn multi_arch_index_resolves_to_this_machine() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    let layout = s.path().join("multi");
    let image = |arch: &str| {
        vec![
            (base_layer().finish(), Compression::Gzip),
            (
                Layer::new()
                    .file("arch", format!("{arch}\n").as_bytes(), 0o644)
                    .finish(),
                Compression::Gzip,
            ),
        ]
    };
    write_multiarch_layout(
        &layout,
        vec![
            ("arm64", image("arm64")),
            ("amd64", image("amd64")),
            ("ppc64le", image("ppc64le")),
        ],
        &RunConfig::default(),
    );
    registry.push(&layout, "multi/img:v1");
    let reference = format!("{}/multi/img:v1", registry.host());
    assert_eq!(ok(s.berth(&["run", &reference, "cat", "/arch"])), "amd64\n");
    // The same layout runs from disk too.
    assert_eq!(
        ok(s.berth(&["run", layout.to_str().unwrap(), "cat", "/arch"])),
        "amd64\n"
    );
}

#[test]
fn concurrent_pulls_download_each_blob_once() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    let layout = pushed(&s, &registry, "shared/img:v1");
    let gate = TokenGate::start(&registry, "alice", "pw");
    use_netrc(&s, &gate.host(), "alice", "pw");
    gate.set_rate(4 << 20); // slow enough that the two pulls overlap
    let reference = format!("{}/shared/img:v1", gate.host());
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            s.berth_command(&["pull", &reference])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        let out = pull.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let gets = gate.blob_gets();
    for digest in layout_layer_digests(&layout) {
        assert_eq!(
            gets.get(&digest),
            Some(&1),
            "layer {digest} downloaded {:?} times",
            gets.get(&digest)
        );
    }
    assert_eq!(
        ok(s.berth(&["run", &reference, "cat", "/etc/motd"])),
        "layer2\n"
    );
}

#[test]
fn kill_9_mid_pull_then_pull_again_finishes() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    pushed(&s, &registry, "slow/img:v1");
    let gate = TokenGate::start(&registry, "alice", "pw");
    use_netrc(&s, &gate.host(), "alice", "pw");
    gate.set_rate(1 << 20);
    let reference = format!("{}/slow/img:v1", gate.host());
    let mut pull = s
        .berth_command(&["pull", &reference])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = s.store().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let downloading = std::fs::read_dir(&tmp)
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name().to_string_lossy().ends_with(".blob")
                        && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
                })
            })
            .unwrap_or(false);
        if downloading {
            break;
        }
        assert!(Instant::now() < deadline, "the download never started");
        assert!(
            pull.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    pull.kill().unwrap();
    pull.wait().unwrap();
    // Nothing a later run would trust: no record, and the run pulls again.
    assert_eq!(count_entries(&s.store().join("images")), 0);
    gate.set_rate(0);
    assert_eq!(
        ok(s.berth(&["run", &reference, "cat", "/etc/motd"])),
        "layer2\n"
    );
    assert_eq!(count_entries(&s.store().join("layers/sha256")), 3);
    assert_eq!(
        count_entries(&tmp),
        0,
        "leftovers of the killed pull were cleaned"
    );
}

#[test]
fn corrupt_blob_in_the_registry_is_refused_naming_the_layer() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    let layout = pushed(&s, &registry, "bad/img:v1");
    let digests = layout_layer_digests(&layout);
    let target = &digests[2]; // the uncompressed top layer
    let blob = registry.blob_path(target);
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 600;
    data[last] ^= 0x55;
    std::fs::write(&blob, data).unwrap();
    let out = s.berth(&["pull", &format!("{}/bad/img:v1", registry.host())]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(target.as_str()),
        "the error names the layer: {}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_eq!(count_entries(&s.store().join("images")), 0);
    assert_eq!(count_entries(&s.store().join("tmp")), 0);
}

#[test]
fn hostile_layer_from_a_registry_is_refused() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    let hostile = Layer::new()
        .symlink("evil", "/etc")
        .file("evil/pwned", b"x", 0o644);
    let layout = s.image_on_base("hostile", hostile);
    registry.push(&layout, "hostile/img:v1");
    let out = s.berth(&[
        "run",
        &format!("{}/hostile/img:v1", registry.host()),
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("passes through the symlink"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new("/etc/pwned").exists());
    assert_eq!(count_entries(&s.store().join("images")), 0);
    assert_eq!(count_entries(&s.store().join("tmp")), 0);
}

#[test]
fn path_escape_devices_and_setuid_from_a_registry() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    let layer = Layer::new().file("../../../../tmp/berth-registry-escape", b"x", 0o644);
    let escape = s.image_on_base("escape", layer);
    registry.push(&escape, "hostile/escape:v1");
    let out = s.berth(&["pull", &format!("{}/hostile/escape:v1", registry.host())]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("escapes the layer"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new("/tmp/berth-registry-escape").exists());
    let layer = Layer::new()
        .char_device("mem", 1, 1)
        .file("bin/suid-tool", b"#!/bin/sh\n", 0o4755);
    let neutral = s.image_on_base("neutral", layer);
    registry.push(&neutral, "hostile/neutral:v1");
    let out = ok(s.berth(&[
        "run",
        &format!("{}/hostile/neutral:v1", registry.host()),
        "sh",
        "-c",
        "test -e /mem && echo MEM; stat -c %a /bin/suid-tool",
    ]));
    assert_eq!(out, "755\n");
    assert_eq!(count_entries(&s.store().join("tmp")), 0);
}

#[test]
fn registry_errors_are_one_clear_line() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    let missing = s.berth(&["pull", &format!("{}/no/such:v1", registry.host())]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    let port = free_port();
    let down = s.berth(&["run", &format!("127.0.0.1:{port}/x/y:z"), "true"]);
    assert_eq!(down.status.code(), Some(125));
    assert!(
        stderr(&down).contains("cannot reach registry"),
        "{}",
        stderr(&down)
    );
    let bad = s.berth(&["pull", "Not/A:valid:ref"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        stderr(&bad).contains("invalid image reference"),
        "{}",
        stderr(&bad)
    );
    for o in [missing, down, bad] {
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
}

/// `[registry] mirrors`: a cluster without internet points docker.io at
/// its own registry; `ubuntu:24.04` keeps its name and comes from there,
/// for `berth run` and under Slurm.
#[test]
fn a_mirror_serves_docker_io_under_docker_ios_names() {
    require_root!();
    let s = Sandbox::new();
    let registry = Registry::start();
    registry.push(&s.standard_image(), "library/ubuntu:24.04");
    s.write_config(&format!(
        "[registry]\nmirrors = {{ \"docker.io\" = \"{}\" }}\n",
        registry.host()
    ));
    assert_eq!(
        ok(s.berth(&["run", "ubuntu:24.04", "cat", "/etc/motd"])),
        "layer2\n"
    );
    let images = ok(s.berth(&["images"]));
    assert!(
        images.contains("docker.io/library/ubuntu:24.04"),
        "{images}"
    );
    let cluster = berth_e2e::slurm::Cluster::start(&s.config());
    let out = cluster.srun(&["--container-image=ubuntu:24.04", "cat", "/etc/motd"]);
    assert_eq!(stdout(&out), "layer2\n", "{}", stderr(&out));
    // A malformed mirror is refused by name.
    s.write_config("[registry]\nmirrors = { \"docker.io\" = \"http://x/\" }\n");
    let out = s.berth(&["images"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("registry.mirrors"),
        "{}",
        stderr(&out)
    );
}
