//! Kept named containers (`container_scope=global`): the helper that starts
//! one, killed at any moment, leaves no keeper holding the container's
//! lock; and a file of the container held open outside it never lets a
//! second mount of its writable layer happen, also where the store's path
//! goes through a symbolic link.

use super::*;

/// `berth slurm-start --named NAME` as the plugin runs it for the test user.
fn start_helper(config: &Path, name: &str, job: u32, image: &str) -> Command {
    let (uid, gid) = test_user();
    let mut c = Command::new(berth_path());
    c.arg("--config-if-present")
        .arg(config)
        .args(["-q", "slurm-start", "--user", &format!("{uid}:{gid}")])
        .args(["--named", name, "--job", &job.to_string(), "--step-id", "0"])
        .arg(image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/");
    c
}

/// The loop devices backing the same file as `file` (by device and inode).
fn loops_backing(file: &Path) -> usize {
    let Ok(want) = std::fs::metadata(file) else {
        return 0;
    };
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .ok()
                .and_then(|f| std::fs::metadata(f.trim_end()).ok())
                .is_some_and(|m| (m.dev(), m.ino()) == (want.dev(), want.ino()))
        })
        .count()
}

/// Kills every process whose command line names `config` (this test's keepers).
fn kill_processes_naming(config: &Path) {
    let needle = config.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: kill on a pid of this test's own processes.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A sandbox whose store is reached through a symbolic link (a parent of
/// the configured path is one, as `/var/lib -> /local/var` on many nodes).
fn store_through_a_link(s: &Sandbox) -> (PathBuf, PathBuf) {
    let real = s.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = s.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = link.join("store");
    let config = s.path().join("kept.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\nsummary_dir = \"{}\"\ncontainer_max_size = \"256M\"\n",
            store.display(),
            s.path().join("ps").display()
        ),
    )
    .unwrap();
    (store, config)
}

#[test]
fn no_keeper_holds_a_kept_containers_lock() {
    needs_root();
    let s = Sandbox::new();
    let (store, config) = store_through_a_link(&s);
    let image = s.standard_image();
    let out = start_helper(&config, "dev", 1, image.to_str().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = store
        .join("containers")
        .join(test_user().0.to_string())
        .join("dev");
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keeper.json")).unwrap()).unwrap();
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lock = std::fs::canonicalize(dir.join("lock")).unwrap();
    for pid in [&base["pid"], &view["pid"]].map(|p| p.as_i64().unwrap()) {
        let holds_lock = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lock));
        assert!(!holds_lock, "keeper {pid} holds the container's lock");
    }
    // A second helper gets the lock at once (a killed first one could not
    // have left it held by its keepers).
    let out = start_helper(&config, "dev", 2, image.to_str().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    kill_processes_naming(&config);
}

#[test]
fn a_file_held_open_outside_never_lets_the_layer_mount_twice() {
    needs_root();
    let s = Sandbox::new();
    let (store, config) = store_through_a_link(&s);
    let image = s.standard_image();
    let image = image.to_str().unwrap();
    let out = start_helper(&config, "dev", 1, image).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let view_pid = view["pid"].as_i64().unwrap() as i32;
    let layer = store
        .join("containers")
        .join(test_user().0.to_string())
        .join("dev/layer.ext4");
    // The user's task opens a file of its container and passes the
    // descriptor out (held here), then its step ends.
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("/proc/{view_pid}/root/held"))
        .unwrap();
    // SAFETY: kill on the pid of this test's view keeper.
    unsafe { libc::kill(view_pid, libc::SIGKILL) };
    wait_until("the view ends", || {
        !Path::new(&format!("/proc/{view_pid}")).exists()
    });
    let leave = Command::new(berth_path())
        .arg("--config-if-present")
        .arg(&config)
        .args(["-q", "slurm-leave", "--uid", &test_user().0.to_string()])
        .output()
        .unwrap();
    assert!(leave.status.success(), "{}", stderr(&leave));
    // The layer is still mounted (through the held file): refused.
    let out = start_helper(&config, "dev", 2, image).output().unwrap();
    let mounts = loops_backing(&layer);
    drop(held);
    kill_processes_naming(&config);
    assert_eq!(mounts, 1, "the writable layer was mounted twice");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("still mounted"), "{}", stderr(&out));
}
