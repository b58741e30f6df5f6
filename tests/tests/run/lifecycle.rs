//! A container's life: exit codes, signals, reaping, the image's layers
//! and config, read-only roots, the store's reuse, and nothing left behind.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use berth_e2e::*;

use super::{both_ways, img};

#[test]
fn exit_codes_follow_docker() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    assert_eq!(
        s.berth(&["run", &image, "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    assert_eq!(
        s.berth(&["run", &image, "sh", "-c", "kill -TERM $$"])
            .status
            .code(),
        Some(143)
    );
    // A real-time signal too (nix's waitpid loses that end: init hung).
    // Under timeout(1), so that a hang fails (124) instead of stalling.
    let by_rt = std::process::Command::new("timeout")
        .args(["-k", "5", "60"])
        .arg(berth_path())
        .arg("--config")
        .arg(s.config())
        .args(["run", &image, "sh", "-c", "kill -s 40 $$"])
        .output()
        .unwrap();
    assert_eq!(by_rt.status.code(), Some(128 + 40), "{}", stderr(&by_rt));
    let missing = s.berth(&["run", &image, "no-such-command"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        stderr(&missing).starts_with("berth: no-such-command: command not found"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(stderr(&missing).lines().count(), 1);
    let not_exec = s.berth(&["run", &image, "/etc/motd"]);
    assert_eq!(not_exec.status.code(), Some(126), "{}", stderr(&not_exec));
    let no_image = s.berth(&["run", "/no/such/image", "true"]);
    assert_eq!(no_image.status.code(), Some(125));
    assert!(
        stderr(&no_image).contains("not found"),
        "{}",
        stderr(&no_image)
    );
    for bad in ["/tmp:/a:rx", "/tmp:rel", "/no/such/src:/x"] {
        let o = s.berth(&["run", "-m", bad, &image, "true"]);
        assert_eq!(o.status.code(), Some(125), "{bad}");
        assert!(stderr(&o).starts_with("berth: "), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
    // A source the user may not read.
    let private = s.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let spec = format!("{}:/p", private.display());
    let o = s.berth_as_user(&["run", "-m", &spec, &image, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    let (uid, gid) = test_user();
    let o = s.berth(&[
        "run",
        "--user",
        &format!("{uid}:{gid}"),
        "-m",
        &spec,
        &image,
        "true",
    ]);
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    // Denied by policy.
    let o = s.berth(&["run", "-m", "/proc:/p", &image, "true"]);
    assert!(stderr(&o).contains("not allowed"), "{}", stderr(&o));
    // A source above a denied path would bring it along (the host's /dev
    // with every GPU node, /proc): refused too, as root and as a user.
    for o in [
        s.berth(&["run", "-m", "/:/host", &image, "true"]),
        s.berth_as_user(&["run", "-m", "/:/host", &image, "true"]),
    ] {
        assert_eq!(o.status.code(), Some(125));
        assert!(
            stderr(&o).contains("mount source / holds /proc"),
            "{}",
            stderr(&o)
        );
    }
    // A bad config names the line.
    s.write_config("[security]\nseccompp = true\n");
    let o = s.berth(&["run", &image, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("berth.toml:5:") && stderr(&o).contains("seccompp"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn signals_are_forwarded_to_the_command() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    for (signal, code) in [(libc::SIGTERM, 42), (libc::SIGUSR1, 43), (libc::SIGINT, 44)] {
        let script = "trap 'exit 42' TERM; trap 'exit 43' USR1; trap 'exit 44' INT; echo ready; while :; do sleep 0.05; done";
        let mut child = s
            .berth_command(&["run", &image, "sh", "-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        assert_eq!(&buf, b"ready\n");
        // SAFETY: kill on a child we spawned.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {signal}");
    }
}

#[test]
fn zombies_are_reaped_by_init() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    // The orphaned sleeps are re-parented to init, which must reap them.
    let out = ok(s.berth(&["run", &image, "sh", "-c", "(sleep 0.1 &) ; (sleep 0.1 &); sleep 0.4; grep -l zombie /proc/[0-9]*/status 2>/dev/null | wc -l; grep -h State /proc/[0-9]*/status | grep -c Z; true"]));
    assert!(out.lines().any(|l| l.trim() == "0"), "{out}");
    assert!(out.trim().ends_with('0'), "zombies left: {out}");
}

#[test]
fn whiteouts_and_opaque_directories_apply() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let script = "test -e /etc/gone && echo GONE-VISIBLE; cat /etc/motd; ls /data";
    let (as_root, rootless) = both_ways(&s, &[&image, "sh", "-c", script]);
    for out in [as_root, rootless] {
        assert_eq!(out, "layer2\nnew\n");
    }
}

#[test]
fn image_config_env_workdir_and_cmd_are_honoured() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    assert_eq!(ok(s.berth(&["run", &image])), "default-cmd yes\n/work\n");
    let out = ok(s.berth(&[
        "run",
        "-e",
        "FROM_IMAGE=overridden",
        "-e",
        "EXTRA=1",
        "-w",
        "/tmp",
        &image,
        "sh",
        "-c",
        "echo $FROM_IMAGE $EXTRA; pwd",
    ]));
    assert_eq!(out, "overridden 1\n/tmp\n");
    // The host's environment does not leak in.
    let out = ok(s
        .berth_command(&["run", &image, "env"])
        .env("HOST_ONLY", "leak")
        .output()
        .unwrap());
    assert!(!out.contains("HOST_ONLY"), "{out}");
}

#[test]
fn read_only_root_with_writable_tmp() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let script = "touch /x 2>/dev/null && echo ROOT-WRITABLE; touch /tmp/x && echo tmp-ok";
    let out = ok(s.berth(&["run", "--read-only", &image, "sh", "-c", script]));
    assert_eq!(out, "tmp-ok\n");
    let out = ok(s.berth_as_user(&[
        "run",
        "--read-only",
        "--remap-root",
        &image,
        "sh",
        "-c",
        script,
    ]));
    assert_eq!(out, "tmp-ok\n");
    // Without --read-only, writes go to the container's own upper layer and vanish.
    ok(s.berth(&["run", &image, "touch", "/written"]));
    assert_eq!(
        ok(s.berth(&[
            "run",
            &image,
            "sh",
            "-c",
            "test -e /written && echo persisted; echo ok"
        ])),
        "ok\n"
    );
}

#[test]
fn second_run_unpacks_nothing() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    ok(s.berth(&["run", &image, "true"]));
    let layers = s.store().join("layers/sha256");
    let before: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before.len(), 3);
    let mtimes: Vec<_> = before
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let out = s.berth(&["-v", "-v", "run", &image, "true"]);
    assert!(
        !stderr(&out).contains("layer extracted"),
        "{}",
        stderr(&out)
    );
    let after: Vec<_> = before
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(mtimes, after);
    assert_eq!(std::fs::read_dir(s.store().join("tmp")).unwrap().count(), 0);
}

#[test]
fn kill_9_of_berth_leaves_no_process_or_mount() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    for rootless in [false, true] {
        let token = format!("{}", 4242 + rootless as u32);
        let args = ["run", &image, "berth-probe", "sleep", &token];
        let mut cmd = if rootless {
            s.berth_user_command(&args)
        } else {
            s.berth_command(&args)
        };
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
        let pattern = format!("berth-probe sleep {token}");
        assert!(pgrep(&pattern), "the container's command should be running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pgrep(&pattern) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !pgrep(&pattern),
            "the container outlived berth (rootless={rootless})"
        );
        assert!(
            !pgrep(&format!("berth --config {}", s.config().display())),
            "berth's init outlived berth"
        );
        assert!(host_mounts_mentioning(s.path().to_str().unwrap()).is_empty());
    }
}

fn pgrep(pattern: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        text.contains(pattern) && !text.contains("cargo")
    })
}

#[test]
fn nothing_stays_mounted_on_the_host_after_runs() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    ok(s.berth(&["run", &image, "true"]));
    let _ = s.berth(&["run", &image, "false"]);
    let _ = s.berth(&["run", &image, "no-such-command"]);
    assert!(host_mounts_mentioning(s.path().to_str().unwrap()).is_empty());
    assert!(host_mounts_mentioning("overlay")
        .iter()
        .all(|l| !l.contains("berth")));
}

#[test]
fn image_user_is_honoured_for_root_and_ignored_for_users() {
    require_root!();
    let s = Sandbox::new();
    let dir = s.path().join("user-image");
    let run = RunConfig {
        user: Some("nobody".into()),
        ..RunConfig::default()
    };
    write_layout(&dir, vec![(base_layer().finish(), Compression::Gzip)], &run);
    let image = dir.to_str().unwrap();
    assert_eq!(
        ok(s.berth(&["run", image, "berth-probe", "ids"])).trim(),
        "uid=65534,65534,65534 gid=65534,65534,65534"
    );
    // An unprivileged caller always runs as itself.
    let (uid, _) = test_user();
    assert!(ok(s.berth_as_user(&["run", image, "berth-probe", "ids"]))
        .starts_with(&format!("uid={uid},")));
    // --user wins over the image's User.
    assert_eq!(
        ok(s.berth(&["run", "--user", "123:456", image, "berth-probe", "ids"])).trim(),
        "uid=123,123,123 gid=456,456,456"
    );
    let numeric = s.path().join("numeric-user");
    write_layout(
        &numeric,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig {
            user: Some("4242:4343".into()),
            ..RunConfig::default()
        },
    );
    assert_eq!(
        ok(s.berth(&["run", numeric.to_str().unwrap(), "berth-probe", "ids"])).trim(),
        "uid=4242,4242,4242 gid=4343,4343,4343"
    );
}

#[test]
fn root_acting_for_a_user_cannot_read_an_image_the_user_cannot() {
    require_root!();
    let s = Sandbox::new();
    let private = s.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let image = private.join("image");
    berth_e2e::write_standard_image(&image);
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    let out = s.berth(&["run", "--user", &user, image.to_str().unwrap(), "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("permission denied for uid"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        count_entries(&s.store().join("layers/sha256")),
        0,
        "nothing was imported"
    );
    // Root for itself may.
    ok(s.berth(&["run", image.to_str().unwrap(), "true"]));
}
