//! The audit trail (`[audit]`): a JSON line per container start, failed
//! start and end, for `berth run` and Slurm steps, in a file users can
//! neither write nor truncate, and to syslog.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::slurm::Cluster;
use berth_e2e::*;

/// The trail's lines, parsed.
fn trail(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A sandbox whose config keeps the trail in `<sandbox>/audit/audit.jsonl`.
fn audited() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    let dir = s.path().join("audit");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("audit.jsonl");
    s.write_config(&format!("[audit]\nfile = \"{}\"\n", file.display()));
    (s, file)
}

#[test]
fn berth_run_records_its_start_end_and_failed_starts() {
    require_root!();
    let (s, file) = audited();
    let image = s.standard_image();
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    // Syslog too: a listener where syslog(3) sends (the machine has none).
    let listener = (!Path::new("/dev/log").exists()).then(|| {
        let socket = UnixDatagram::bind("/dev/log").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    });
    let out = s.berth(&[
        "run",
        "--user",
        &user,
        "--memory",
        "64M",
        image.to_str().unwrap(),
        "sh",
        "-c",
        "exit 3",
    ]);
    let syslogged = listener.as_ref().map(|socket| {
        let mut buf = vec![0u8; 65536];
        let n = socket.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    if listener.is_some() {
        let _ = std::fs::remove_file("/dev/log");
    }
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = trail(&file);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (start, end) = (&lines[0], &lines[1]);
    assert_eq!(start["event"], "start");
    assert_eq!(start["origin"], "run");
    assert_eq!(start["uid"], uid);
    assert_eq!(start["user"], TEST_USER);
    assert_eq!(start["image"], image.to_str().unwrap());
    assert!(
        start["image_id"].as_str().is_some_and(|i| !i.is_empty()),
        "{start}"
    );
    assert!(
        start["limits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "memory=67108864"),
        "{start}"
    );
    assert_eq!(end["event"], "end");
    assert_eq!(end["exit"], 3);
    assert!(end["duration_ms"].as_u64().is_some(), "{end}");
    match syslogged {
        Some(message) => assert!(
            message.contains("berth-audit: {") && message.contains("\"event\":\"start\""),
            "{message}"
        ),
        // A syslog of the machine's own holds it.
        None => {
            let out = std::process::Command::new("journalctl")
                .args(["-q", "-t", "berth", "--since", "-5min"])
                .output()
                .expect("journalctl, for the syslog half of the trail");
            assert!(stdout(&out).contains("berth-audit: {"), "{}", stdout(&out));
        }
    }

    // A start that fails says why.
    let out = s.berth(&["run", "--user", &user, "/no/such/image", "true"]);
    assert!(!out.status.success());
    let failed = trail(&file).pop().unwrap();
    assert_eq!(failed["event"], "start_failed");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/no/such/image")),
        "{failed}"
    );

    // The user can neither write nor truncate the trail.
    let before = std::fs::read(&file).unwrap();
    for attempt in [
        format!("echo forged >> {0}", file.display()),
        format!(": > {0}", file.display()),
    ] {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("sh")
            .args(["-c", &attempt])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{attempt} worked as the test user");
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_slurm_step_records_its_container_start_and_end() {
    require_root!();
    let (s, file) = audited();
    let image = s.standard_image();
    let cluster = Cluster::start(&s.config());
    // Its tasks end with 2 and 3: the end records the highest.
    let out = cluster.srun(&[
        &format!("--container-image={}", image.display()),
        "-n2",
        "sh",
        "-c",
        "exit $((SLURM_PROCID + 2))",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    wait_until("the step's end is recorded", || {
        trail(&file).iter().any(|l| l["event"] == "end")
    });
    let lines = trail(&file);
    let start = lines.iter().find(|l| l["event"] == "start").unwrap();
    assert_eq!(start["origin"], "slurm");
    assert_eq!(start["uid"], test_user().0);
    assert_eq!(start["job"], 1);
    assert_eq!(start["step"], "0");
    assert_eq!(start["node"], cluster.node);
    assert!(start["pid"].as_i64().is_some_and(|p| p > 0), "{start}");
    let end = lines.iter().find(|l| l["event"] == "end").unwrap();
    assert_eq!(end["pid"], start["pid"]);
    assert_eq!(end["job"], 1);
    assert_eq!(end["step"], "0");
    assert_eq!(end["node"], cluster.node);
    assert_eq!(end["uid"], test_user().0);
    assert!(end["duration_ms"].as_u64().is_some(), "{end}");
    assert_eq!(end["exit"], 3, "{end}");
    // One container for the step's two tasks: one start, one end.
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // A step whose image is missing: a failed start, with the reason.
    let out = cluster.srun(&["--container-image=/no/such/image.sqsh", "true"]);
    assert!(!out.status.success());
    let failed = trail(&file)
        .into_iter()
        .find(|l| l["event"] == "start_failed")
        .unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/no/such/image.sqsh")),
        "{failed}"
    );
    assert_eq!(failed["job"], 2);
}

/// An image pulled from a registry is recorded with its manifest digest
/// (the store's record of the pull), beside its config digest.
#[test]
fn a_pulled_image_is_recorded_with_its_manifest_digest() {
    require_root!();
    let (s, file) = audited();
    let registry = berth_e2e::registry::Registry::start();
    registry.push(&s.standard_image(), "audit/img:v1");
    let reference = format!("{}/audit/img:v1", registry.host());
    let (uid, gid) = test_user();
    let out = s.berth(&["run", "--user", &format!("{uid}:{gid}"), &reference, "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let start = trail(&file)
        .into_iter()
        .find(|r| r["event"] == "start")
        .unwrap();
    let pulled: Vec<serde_json::Value> = std::fs::read_dir(s.store().join("images"))
        .unwrap()
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    let record = pulled
        .iter()
        .find(|r| r["manifest_digest"].is_string())
        .unwrap_or_else(|| panic!("no pulled record: {pulled:#?}"));
    assert_eq!(
        start["manifest_digest"], record["manifest_digest"],
        "{start}"
    );
    assert_eq!(start["image_id"], record["id"], "{start}");
    assert_ne!(start["manifest_digest"], start["image_id"]);
    assert!(start["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}
