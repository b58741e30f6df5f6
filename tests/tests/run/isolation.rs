//! Each isolation claim of `berth run`, attacked: pids, hostname, ids,
//! capabilities, host files, kernel files, privileged syscalls, seccomp, setuid.

use std::os::unix::fs::PermissionsExt;

use berth_e2e::*;

use super::{both_ways, img};

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
        let owner = (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta),
        );
        assert_eq!(owner, (uid, gid), "{name}");
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
