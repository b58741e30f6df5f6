//! `berth run` against the real kernel, as root and as an unprivileged user:
//! isolation claims are each attacked here.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use berth_e2e::*;

fn img(s: &Sandbox) -> String {
    s.standard_image().to_str().unwrap().to_string()
}

/// Runs the same check as root (berth --user of the test user) and rootless.
fn both_ways(s: &Sandbox, args: &[&str]) -> (String, String) {
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    let mut root_args = vec!["run", "--user", &user];
    root_args.extend_from_slice(args);
    let mut user_args = vec!["run"];
    user_args.extend_from_slice(args);
    (ok(s.berth(&root_args)), ok(s.berth_as_user(&user_args)))
}

#[test]
fn pid1_is_init_and_only_container_processes_are_visible() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let script = "ls -d /proc/[0-9]* | wc -l; cat /proc/1/comm; echo $$";
    for out in [
        ok(s.berth(&["run", &image, "sh", "-c", script])),
        ok(s.berth_as_user(&["run", &image, "sh", "-c", script])),
    ] {
        let lines: Vec<&str> = out.lines().collect();
        // init, sh, and the ls itself (plus wc in the pipeline): never the host's processes.
        let count: usize = lines[0].trim().parse().unwrap();
        assert!(count <= 4, "saw {count} processes: {out}");
        assert_eq!(lines[1], "berth", "pid 1 is berth's init: {out}");
        assert_eq!(lines[2], "2", "the command is pid 2: {out}");
    }
}

#[test]
fn hostname_is_the_containers_own() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    assert_eq!(ok(s.berth(&["run", &image, "hostname"])).trim(), "berth");
    assert_eq!(
        ok(s.berth(&["run", "--hostname", "node-a", &image, "hostname"])).trim(),
        "node-a"
    );
    assert_eq!(
        ok(s.berth_as_user(&["run", "--hostname", "node-b", &image, "hostname"])).trim(),
        "node-b"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "node-a");
    let bad = s.berth(&["run", "--hostname", "bad name", &image, "true"]);
    assert_eq!(bad.status.code(), Some(125));
}

#[test]
fn uid_and_gid_mapping_with_and_without_remap_root() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let (uid, gid) = test_user();
    let (as_root, rootless) = both_ways(&s, &[&image, "berth-probe", "ids"]);
    let expected = format!("uid={uid},{uid},{uid} gid={gid},{gid},{gid}");
    assert_eq!(as_root.trim(), expected);
    assert_eq!(rootless.trim(), expected);
    let (as_root, rootless) = both_ways(&s, &["--remap-root", &image, "berth-probe", "ids"]);
    assert_eq!(as_root.trim(), "uid=0,0,0 gid=0,0,0");
    assert_eq!(rootless.trim(), "uid=0,0,0 gid=0,0,0");

    // Outside, files the container writes belong to the user, remapped or not.
    let shared = s.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(uid), Some(gid)).unwrap();
    let mount = format!("{}:/shared", shared.display());
    let user = format!("{uid}:{gid}");
    ok(s.berth(&[
        "run",
        "--user",
        &user,
        "--remap-root",
        "-m",
        &mount,
        &image,
        "touch",
        "/shared/by-root-remap",
    ]));
    ok(s.berth_as_user(&[
        "run",
        "--remap-root",
        "-m",
        &mount,
        &image,
        "touch",
        "/shared/by-rootless-remap",
    ]));
    ok(s.berth_as_user(&["run", "-m", &mount, &image, "touch", "/shared/by-rootless"]));
    for name in ["by-root-remap", "by-rootless-remap", "by-rootless"] {
        let meta = std::fs::metadata(shared.join(name)).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid, "{name}");
    }
    // The root caller's own container is root with the small capability set.
    let caps = ok(s.berth(&["run", &image, "grep", "CapEff", "/proc/self/status"]));
    assert!(caps.contains("00000000200405fb"), "{caps}");
}

#[test]
fn capabilities_are_dropped_for_a_user_and_small_for_remap_root() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let (as_root, rootless) = both_ways(
        &s,
        &[
            &image,
            "grep",
            "-E",
            "^Cap(Eff|Prm|Bnd|Amb)|NoNewPrivs|Seccomp:",
            "/proc/self/status",
        ],
    );
    for out in [&as_root, &rootless] {
        for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            assert!(
                out.contains(&format!("{set}:\t0000000000000000")),
                "{set} not empty: {out}"
            );
        }
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
    }
    // Init (pid 1, the same uid) is confined as the command is: it kept a
    // full bounding set before (dropped after setuid, which then failed).
    let (as_root, rootless) = both_ways(
        &s,
        &[&image, "grep", "-E", "^Cap(Eff|Prm|Bnd):", "/proc/1/status"],
    );
    for out in [&as_root, &rootless] {
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert!(
                out.contains(&format!("{set}:\t0000000000000000")),
                "init's {set} not empty: {out}"
            );
        }
    }
    let (as_root, rootless) = both_ways(
        &s,
        &[
            "--remap-root",
            &image,
            "grep",
            "CapBnd",
            "/proc/self/status",
        ],
    );
    for out in [as_root, rootless] {
        // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT AUDIT_WRITE
        assert!(out.contains("00000000200405fb"), "{out}");
    }
}

#[test]
fn host_files_outside_mounts_are_invisible() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let secret = s.path().join("host-secret");
    std::fs::write(&secret, "secret").unwrap();
    let check = format!("test -e {} && echo visible; test -e /home && echo home; test -e /var/lib && echo varlib; ls /", secret.display());
    let (as_root, rootless) = both_ways(&s, &[&image, "sh", "-c", &check]);
    for out in [as_root, rootless] {
        assert!(
            !out.contains("visible") && !out.contains("home") && !out.contains("varlib"),
            "{out}"
        );
    }
    // A mounted path is visible, read-only when asked.
    let data = s.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(data.join("in"), "mounted\n").unwrap();
    let ro = format!("{}:/mnt/data:ro", data.display());
    let out = s.berth_as_user(&[
        "run",
        "-m",
        &ro,
        &image,
        "sh",
        "-c",
        "cat /mnt/data/in; touch /mnt/data/x || echo refused",
    ]);
    let out = ok(out);
    assert!(out.contains("mounted") && out.contains("refused"), "{out}");
    assert!(!data.join("x").exists());
    let rw = format!("{}:/mnt/data", data.display());
    ok(s.berth_as_user(&["run", "-m", &rw, &image, "touch", "/mnt/data/x"]));
    assert!(data.join("x").exists());
}

#[test]
fn kernel_files_are_masked_and_proc_sys_is_read_only() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let script = "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
                  test -e $f && echo \"$f $(wc -c < $f)\"; done; \
                  echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo WROTE; \
                  echo b > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ; touch /sys/x 2>/dev/null && echo SYS; echo end";
    for args in [
        vec!["run", "--remap-root", &image, "sh", "-c", script],
        vec!["run", &image, "sh", "-c", script],
    ] {
        let out = ok(s.berth(&args));
        assert!(
            !out.contains("WROTE") && !out.contains("SYSRQ") && !out.contains("SYS\n"),
            "{out}"
        );
        let masked: Vec<&str> = out.lines().filter(|l| l.starts_with("/proc/")).collect();
        assert!(masked.iter().any(|l| l.starts_with("/proc/keys")), "{out}");
        assert!(
            masked.iter().any(|l| l.starts_with("/proc/timer_list")),
            "{out}"
        );
        for line in masked {
            assert!(line.ends_with(" 0"), "{line} must read empty: {out}");
        }
    }
}

#[test]
fn mount_sethostname_mknod_modules_and_namespaces_are_refused() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    for remap in [false, true] {
        let mut args = vec!["run"];
        if remap {
            args.push("--remap-root");
        }
        args.extend_from_slice(&[&image, "sh", "-c"]);
        let script = "for p in 'mount_tmpfs /tmp' 'umount /proc' sethostname 'mknod /tmp/dev' init_module finit_module \
                      unshare_user unshare_mount setuid0; do echo \"$p: $(berth-probe $p)\"; done";
        args.push(script);
        let user_args = args.clone();
        let (uid, gid) = test_user();
        let user = format!("{uid}:{gid}");
        args.splice(1..1, ["--user", user.as_str()]);
        for out in [ok(s.berth(&args)), ok(s.berth_as_user(&user_args))] {
            for line in out.lines() {
                if line.starts_with("setuid0") {
                    // root inside already with remap-root; otherwise uid 0 is
                    // either unmapped (EINVAL) or needs a capability (EPERM).
                    assert!(
                        remap || line.ends_with("EPERM") || line.ends_with("EINVAL"),
                        "{line}"
                    );
                    continue;
                }
                assert!(line.ends_with("EPERM"), "remap={remap}: {line}\n{out}");
            }
        }
    }
}

#[test]
fn seccomp_blocks_dangerous_syscalls_with_eperm() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let script = "for p in keyctl add_key kexec_load open_by_handle_at; do echo \"$p: $(berth-probe $p)\"; done";
    for args in [
        vec!["run", &image, "sh", "-c", script],
        vec!["run", "--remap-root", &image, "sh", "-c", script],
    ] {
        let out = ok(s.berth(&args));
        for line in out.lines() {
            assert!(line.ends_with("EPERM"), "{line}\n{out}");
        }
        let out = ok(s.berth_as_user(&args));
        for line in out.lines() {
            assert!(line.ends_with("EPERM"), "{line}\n{out}");
        }
    }
    // The filter is what refuses keyctl: without it the kernel answers otherwise.
    s.write_config("[security]\nseccomp = false\n");
    let out = ok(s.berth(&["run", &image, "berth-probe", "keyctl"]));
    assert_ne!(out.trim(), "EPERM", "keyctl without seccomp");
}

#[test]
fn setuid_root_binary_does_not_raise_privileges() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    // Default: the bit is stripped when the layer is unpacked.
    let out = ok(s.berth(&[
        "run",
        "--user",
        &user,
        &image,
        "sh",
        "-c",
        "stat -c %a /bin/suid-probe; suid-probe ids",
    ]));
    assert!(out.starts_with("755\n"), "{out}");
    assert!(out.contains(&format!("uid={uid},{uid},{uid}")), "{out}");
    // Even when the admin keeps setuid bits, no_new_privs makes them inert.
    let s2 = Sandbox::new();
    s2.write_config("[security]\nallow_setuid = true\n");
    let image2 = img(&s2);
    let out = ok(s2.berth(&[
        "run",
        "--user",
        &user,
        &image2,
        "sh",
        "-c",
        "stat -c %a /bin/suid-probe; suid-probe ids",
    ]));
    assert!(out.starts_with("4755\n"), "{out}");
    assert!(
        out.contains(&format!("uid={uid},{uid},{uid}")),
        "setuid raised privileges: {out}"
    );
}

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
    for bad in ["/tmp", "/tmp:rel", "/no/such/src:/x"] {
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
        stderr(&o).contains("berth.toml:4:") && stderr(&o).contains("seccompp"),
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
