//! Limits on a real cgroup v2 kernel. This machine's host mounts cgroup v1
//! controllers, so `limits_hold_on_a_cgroup_v2_kernel` boots a throw-away
//! qemu guest (see `berth_e2e::vm`) and runs this same test binary there
//! with `--ignored`: the `vm_` tests below run inside it, as root, against
//! cgroup2 with every controller.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::*;

/// Whether the unified hierarchy (with controllers) is at /sys/fs/cgroup.
fn cgroup_v2() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.contains("memory"))
}

/// The `vm_` tests run (with `--ignored`) in the guest only, where
/// cgroup v2 must be there: anywhere else they fail, never skip.
macro_rules! require_v2 {
    () => {
        require_root!();
        assert!(
            cgroup_v2(),
            "needs cgroup v2 with its controllers: limits_hold_on_a_cgroup_v2_kernel runs it in a VM"
        );
    };
}

#[test]
fn limits_hold_on_a_cgroup_v2_kernel() {
    require_root!();
    if vm::in_vm() {
        return; // the guest runs the vm_ tests themselves
    }
    test_user(); // the guest sees the host's /etc/passwd
    let me = std::env::current_exe().unwrap();
    let out = vm::run(
        &me,
        &["--ignored", "--test-threads=1", "vm_"],
        &[("RUST_BACKTRACE", "1")],
        me.parent().unwrap(),
        Duration::from_secs(540),
    );
    assert_eq!(
        out.rc,
        Some(0),
        "in the cgroup v2 guest:\n{}\n--- console:\n{}",
        out.output,
        out.console
    );
    assert!(out.output.contains("test result: ok"), "{}", out.output);
    eprintln!("{}", out.output);
}

fn sandbox(limits: &str) -> (Sandbox, String) {
    let s = Sandbox::new();
    s.write_config(&format!(
        "[limits]\ncgroup_parent = \"berth-vm-test\"\n{limits}"
    ));
    let image = s.standard_image().to_str().unwrap().to_string();
    (s, image)
}

fn no_cgroup_left() {
    let parent = Path::new("/sys/fs/cgroup/berth-vm-test");
    if parent.exists() {
        let left: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "cgroups left: {left:?}");
    }
}

#[test]
#[ignore = "runs in the cgroup v2 guest"]
fn vm_memory_max_kills_inside_the_container_and_berth_says_so() {
    require_v2!();
    let (s, image) = sandbox("[limits.max]\nmemory = \"256M\"\n");
    // Another user's container runs beside it the whole time.
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    let neighbour = s
        .berth_command(&["run", "--user", &user, &image, "berth-probe", "sleep", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = s.berth(&[
        "run",
        "--memory",
        "32M",
        "--swap",
        "0",
        &image,
        "berth-probe",
        "alloc",
        "200",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("berth: the container ran out of memory: the kernel killed 1 process at its memory limit of 32M"),
        "{}",
        stderr(&out)
    );
    // Within the limit the same program runs.
    assert_eq!(
        ok(s.berth(&[
            "run",
            "--memory",
            "128M",
            &image,
            "berth-probe",
            "alloc",
            "40"
        ])),
        "allocated 40\n"
    );
    // The container sees its own limit, read-only.
    let text = ok(s.berth(&[
        "run",
        "--memory",
        "64M",
        &image,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory.max; echo 1 > /sys/fs/cgroup/memory.max || echo read-only",
    ]));
    assert!(
        text.starts_with("67108864\n") && text.contains("read-only"),
        "{text}"
    );
    // Asking above the maximum is refused before anything starts.
    let out = s.berth(&["run", "--memory", "1G", &image, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("more than berth.toml allows"),
        "{}",
        stderr(&out)
    );
    let neighbour = neighbour.wait_with_output().unwrap();
    assert!(neighbour.status.success());
    assert_eq!(stdout(&neighbour), "ready\ndone\n");
    no_cgroup_left();
}

/// How many children `berth-probe forks` made.
fn children_forked(text: &str) -> usize {
    text.trim()
        .strip_prefix("forked ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a forks report: {text:?}"))
}

#[test]
#[ignore = "runs in the cgroup v2 guest"]
fn vm_pids_max_stops_a_fork_bomb() {
    require_v2!();
    let (s, image) = sandbox("[limits.default]\npids = 16\n");
    let text = ok(s.berth(&["run", &image, "berth-probe", "forks", "500"]));
    let forked = children_forked(&text);
    assert!(forked < 16, "{text}");
    let text = ok(s.berth(&[
        "run",
        "--pids-limit",
        "64",
        &image,
        "berth-probe",
        "forks",
        "500",
    ]));
    let forked = children_forked(&text);
    assert!((16..64).contains(&forked), "{text}");
    no_cgroup_left();
}

#[test]
#[ignore = "runs in the cgroup v2 guest"]
fn vm_cpu_max_throttles() {
    require_v2!();
    let (s, image) = sandbox("");
    let text = ok(s.berth(&[
        "run",
        "--cpus",
        "0.2",
        &image,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/cpu.max; berth-probe spin 2; grep nr_throttled /sys/fs/cgroup/cpu.stat",
    ]));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("20000 100000"), "{text}");
    let cpu_ms: u64 = lines
        .next()
        .unwrap()
        .strip_prefix("cpu_ms ")
        .unwrap()
        .parse()
        .unwrap();
    // 2 s at a fifth of a CPU is about 400 ms of CPU time.
    assert!(cpu_ms < 1000, "{text}");
    let throttled: u64 = lines
        .next()
        .unwrap()
        .strip_prefix("nr_throttled ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(throttled > 0, "{text}");
    no_cgroup_left();
}

#[test]
#[ignore = "runs in the cgroup v2 guest"]
fn vm_io_max_throttles_writes_to_the_disk() {
    require_v2!();
    let sh = |script: &str| {
        let status = std::process::Command::new("sh")
            .args(["-c", script])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "{script}");
    };
    sh("mkfs.ext4 -q -F /dev/vda && mkdir -p /tmp/disk && mount /dev/vda /tmp/disk");
    let (s, image) = sandbox("[limits.max]\nio_devices = [\"/dev/vda\"]\n");
    let start = Instant::now();
    let text = ok(s.berth(&[
        "run", "--io-write-bps", "1M", "-m", "/tmp/disk:/disk", &image, "sh", "-c",
        "cat /sys/fs/cgroup/io.max; dd if=/dev/zero of=/disk/f bs=1M count=3 conv=fsync 2>/dev/null; echo written",
    ]));
    let took = start.elapsed();
    let _ = std::process::Command::new("umount")
        .arg("/tmp/disk")
        .status();
    assert!(text.contains("wbps=1048576"), "{text}");
    assert!(text.ends_with("written\n"), "{text}");
    // 3 MiB at 1 MiB/s cannot be written and synced in much under 2 s.
    assert!(took >= Duration::from_millis(1900), "took {took:?}: {text}");
    no_cgroup_left();
}

#[test]
#[ignore = "runs in the cgroup v2 guest"]
fn vm_device_filter_denies_a_gpu_the_container_was_not_given() {
    require_v2!();
    let s = Sandbox::new();
    let dir = s.path().join("dev");
    make_char_devices(&dir, &[("nvidia0", 195, 0), ("nvidia1", 195, 1)]);
    s.write_config(&format!(
        "[gpus]\ndevices = [\"{d}/nvidia0\", \"{d}/nvidia1\"]\ncdi_spec_dirs = []\n[limits]\ncgroup_parent = \"berth-vm-test\"\n",
        d = dir.display()
    ));
    let image = s.standard_image();
    let mount = format!("{}:/hostdev", dir.display());
    let text = ok(s.berth(&[
        "run", "--gpus", "1", "-m", &mount, image.to_str().unwrap(), "sh", "-c",
        "berth-probe open /dev/nvidia1; berth-probe open /hostdev/nvidia0; berth-probe open /hostdev/nvidia1; berth-probe open /dev/null",
    ]));
    assert_eq!(text, "ENXIO\nEPERM\nENXIO\nOK\n");
    no_cgroup_left();
}
