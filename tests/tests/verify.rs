//! `berth verify`: the seeds' five isolation checks against the live
//! configuration and the real kernel; it passes on a good configuration
//! and fails, naming the check and what to fix, on broken ones.

use berth_e2e::*;

/// Fake GPUs nvidia0..1 (major 195) in `<sandbox>/dev`, and their `[gpus]`
/// lines with `users`.
fn gpus_config(s: &Sandbox, users: &str) -> String {
    let dir = s.path().join("dev");
    make_char_devices(
        &dir,
        &[
            ("nvidia0", 195, 0),
            ("nvidia1", 195, 1),
            ("nvidiactl", 195, 255),
        ],
    );
    format!(
        "[gpus]\ndevices = [\"{0}/nvidia0\", \"{0}/nvidia1\"]\ncdi_spec_dirs = []\n[gpus.users]\n{users}\n",
        dir.display()
    )
}

fn verify(s: &Sandbox, extra: &[&str]) -> (i32, String) {
    let image = s.standard_image();
    let mut args = vec!["verify", "--user", TEST_USER, "--other", "root"];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    let out = s.berth(&args);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn a_good_configuration_passes_every_check() {
    require_root!();
    let s = Sandbox::new();
    s.write_config(&gpus_config(
        &s,
        &format!("\"{TEST_USER}\" = [1]\nroot = [0]"),
    ));
    let (code, text) = verify(&s, &["--gpus", "1"]);
    assert_eq!(code, 0, "{text}");
    for check in [
        "user mapping",
        "filesystem",
        "GPUs",
        "privileges",
        "other users",
    ] {
        assert!(text.contains(&format!("PASS  {check}")), "{check}: {text}");
    }
    // The GPU given, by its device number, and nothing else.
    assert!(
        text.contains("in the container: [\"195:1\"] (given: [\"195:1\"])"),
        "{text}"
    );
    let (code, json) = verify(&s, &["--gpus", "1", "--json"]);
    assert_eq!(code, 0, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let checks = report[TEST_USER].as_array().unwrap();
    assert_eq!(checks.len(), 5, "{json}");
    assert!(checks.iter().all(|c| c["passed"] == true));
}

#[test]
fn broken_configurations_fail_naming_the_check() {
    require_root!();
    let s = Sandbox::new();
    // A GPU granted to two users.
    s.write_config(&gpus_config(
        &s,
        &format!("\"{TEST_USER}\" = [0]\nroot = [0]"),
    ));
    let (code, text) = verify(&s, &["--gpus", "0"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  GPUs"), "{text}");
    assert!(
        text.contains(&format!("GPU 0 is granted to both {TEST_USER} and root")),
        "{text}"
    );
    assert!(text.contains("PASS  privileges"), "{text}");

    // Another user's data directory, world-readable, mounted in.
    s.write_config("");
    let data = s.path().join("data-of-another");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mount = format!("{}:/workspace/theirs", data.display());
    let hidden = data.display().to_string();
    let (code, text) = verify(&s, &["-m", &mount, "--hidden", &hidden]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  filesystem"), "{text}");
    assert!(
        text.contains(&format!("host directory {hidden} is in the container")),
        "{text}"
    );
    // A directory that cannot take a marker cannot be checked: a failure.
    let (code, text) = verify(&s, &["--hidden", "/sys/kernel"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/sys/kernel: cannot be checked"), "{text}");
    // Without that mount it passes.
    let (code, text) = verify(&s, &["--hidden", &hidden]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(count_entries(&data), 0, "the markers are removed");
}

/// Without --user, every `[login]` user's container as configured: the
/// seeds' home at /workspace and 0700 data directory at /workspace/data,
/// each user's own GPU; the other login users are the ones who must not
/// reach it. A data directory that is not 0700 is refused, naming it.
#[test]
fn every_login_users_container_is_verified_as_configured() {
    require_root!();
    let s = Sandbox::new();
    let (other, other_uid) = second_test_user();
    let image = s.standard_image();
    let data = s.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (name, uid) in [
        (TEST_USER.to_string(), test_user().0),
        (other.clone(), other_uid),
    ] {
        let dir = data.join(format!("{name}_data"));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
    }
    let gpus = gpus_config(&s, &format!("\"{TEST_USER}\" = [0]\n\"{other}\" = [1]"));
    s.write_config(&format!(
        "[login]\nimage = \"{}\"\nusers = [\"{TEST_USER}\", \"{other}\"]\n\
         [[login.mounts]]\nsource = \"{}/{{user}}_data\"\ndestination = \"/workspace/data\"\n\
         owned_by_user = true\nmode = \"0700\"\n{gpus}",
        image.display(),
        data.display()
    ));
    let out = s.berth(&["verify"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    for user in [TEST_USER, other.as_str()] {
        assert!(text.contains(&format!("== {user}")), "{text}");
        assert!(
            text.contains(&format!("{user}: all checks passed")),
            "{text}"
        );
    }
    // Each has their own GPU: 195:0 and 195:1.
    assert!(text.contains("[\"195:0\"] (given: [\"195:0\"])"), "{text}");
    assert!(text.contains("[\"195:1\"] (given: [\"195:1\"])"), "{text}");

    // A data directory others may read: refused, naming it and the fix.
    let theirs = data.join(format!("{other}_data"));
    std::fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = s.berth(&["verify"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  login mounts"), "{text}");
    assert!(
        text.contains(&format!(
            "{} for {other}: must have mode 0700 (it has 0755)",
            theirs.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{TEST_USER}: all checks passed")),
        "{text}"
    );
    // A missing one likewise.
    std::fs::remove_dir(&theirs).unwrap();
    let out = s.berth(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("create it as a directory of"),
        "{}",
        stdout(&out)
    );
}
