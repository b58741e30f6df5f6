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
    let checks: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(checks.as_array().map(Vec::len), Some(5));
    assert!(checks
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["passed"] == true));
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
