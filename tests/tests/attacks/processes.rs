//! Processes: init cannot be ptraced, remap-root keeps its groups and its bounding set (findings 11 and 12).

use super::*;

/// Rootless, the command could PTRACE_ATTACH the container's init (same
/// uid), and hang berth for ever. Now init is not dumpable.
#[test]
fn the_command_cannot_ptrace_its_init() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let out = s.berth_as_user(&["run", image.to_str().unwrap(), "berth-probe", "ptrace", "1"]);
    assert_eq!(ok(out).trim(), "EPERM");
}

/// Root-run `--remap-root` dropped the user's supplementary groups, so a
/// file denied to one of them (mode 0604, that group's owner) became
/// readable as "other". Now the groups stay, and cannot be dropped inside.
#[test]
fn remap_root_keeps_the_groups_that_deny_access() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let group = "berth-denied";
    let _ = Command::new("groupadd").args(["-f", group]).status();
    let added = Command::new("gpasswd")
        .args(["-a", TEST_USER, group])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let dir = s.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("not-for-the-group");
    std::fs::write(&file, "readable by others only\n").unwrap();
    let chgrp = Command::new("chgrp")
        .arg(group)
        .arg(&file)
        .status()
        .unwrap();
    assert!(chgrp.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let mount = format!("{}:/shared", dir.display());
    for remap in [false, true] {
        let user = user_flag();
        let mut args = vec!["run", "--user", user.as_str()];
        if remap {
            args.push("--remap-root");
        }
        args.extend_from_slice(&[
            "-m",
            &mount,
            image.to_str().unwrap(),
            "berth-probe",
            "read",
            "/shared/not-for-the-group",
        ]);
        let text = ok(s.berth(&args));
        assert_eq!(text.trim(), "EACCES", "remap-root {remap}: {text}");
    }
}

/// Slurm `--container-remap-root` tasks had a full bounding set (a new user
/// namespace starts with one). Now it is the configured set, as the
/// permitted one.
#[test]
fn slurm_remap_root_tasks_have_only_the_configured_bounding_set() {
    needs_root();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[
        &image_opt,
        "--container-remap-root",
        "grep",
        "-E",
        "^Cap(Prm|Bnd):",
        "/proc/self/status",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(value("CapBnd:"), value("CapPrm:"), "{text}");
    assert_ne!(value("CapPrm:"), "0000000000000000", "{text}");
}
