//! [`ContainerCgroup`] over temporary directories laid out as v2 and v1
//! cgroup roots: the directories made, the files written, removal.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::limits::device_filter::{self, DeviceRule};
use crate::limits::IoLimit;

/// A pid no process has (above any pid_max): what a test moves "in".
const NO_PID: u32 = i32::MAX as u32;

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

fn v2_root(controllers: &str) -> (tempfile::TempDir, CgroupRoot) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("cgroup.controllers"), controllers).unwrap();
    let root = CgroupRoot::v2(tmp.path());
    (tmp, root)
}

fn limits() -> ResourceLimits {
    ResourceLimits {
        memory: Some(64 << 20),
        swap: Some(16 << 20),
        cpus: Some(1.5),
        pids: Some(42),
        io: Vec::new(),
    }
}

fn cgroup_error(e: LimitsError) -> (String, String) {
    match e {
        LimitsError::Cgroup { path, message } => (path, message),
        other => panic!("not a cgroup error: {other}"),
    }
}

#[test]
fn v2_makes_parents_enables_controllers_and_writes_each_limit() {
    let (tmp, root) = v2_root("cpu io memory pids\n");
    let mut l = limits();
    l.io.push(IoLimit {
        device: "/dev/sda".into(),
        major: 8,
        minor: 0,
        write_bps: Some(2000),
        ..Default::default()
    });
    let cg = ContainerCgroup::create_in(root, "berth/run-7", &BTreeMap::new(), &l, None).unwrap();
    let dir = tmp.path().join("berth/run-7");
    assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
    assert_eq!(cg.path(), "berth/run-7");
    assert_eq!(read(&dir, "memory.max"), "67108864");
    assert_eq!(read(&dir, "memory.swap.max"), "16777216");
    assert_eq!(read(&dir, "cpu.max"), "150000 100000");
    assert_eq!(read(&dir, "pids.max"), "42");
    assert_eq!(read(&dir, "io.max"), "8:0 wbps=2000");
    // Controllers enabled, one write each, in the root and each parent,
    // never in the leaf (it holds processes).
    assert_eq!(read(tmp.path(), "cgroup.subtree_control"), "+pids");
    assert_eq!(
        read(&tmp.path().join("berth"), "cgroup.subtree_control"),
        "+pids"
    );
    assert!(!dir.join("cgroup.subtree_control").exists());
    assert!(cg.open_v2_dir().is_some());
    assert_eq!(cg.keep(), std::slice::from_ref(&dir));
    assert!(dir.join("memory.max").exists());
}

#[test]
fn dropping_removes_the_cgroup_but_not_its_parents_and_keep_leaves_it() {
    let (tmp, root) = v2_root("memory pids");
    let none = ResourceLimits::default();
    let cg = ContainerCgroup::create_in(root.clone(), "a/b/run-1", &BTreeMap::new(), &none, None)
        .unwrap();
    let dir = tmp.path().join("a/b/run-1");
    assert!(dir.is_dir());
    drop(cg);
    assert!(!dir.exists());
    assert!(tmp.path().join("a/b").is_dir());

    let cg = ContainerCgroup::create_in(root, "a/b/run-2", &BTreeMap::new(), &none, None).unwrap();
    let kept = cg.keep();
    assert_eq!(kept, [tmp.path().join("a/b/run-2")]);
    assert!(kept[0].is_dir());
}

#[test]
fn a_controller_the_node_lacks_is_an_error_and_what_was_made_goes() {
    let (tmp, root) = v2_root("memory");
    let l = ResourceLimits {
        pids: Some(5),
        ..Default::default()
    };
    let e =
        ContainerCgroup::create_in(root, "berth/run-2", &BTreeMap::new(), &l, None).unwrap_err();
    assert_eq!(
        cgroup_error(e),
        (
            "berth/run-2".to_string(),
            "the pids controller is not available on this node".to_string()
        )
    );
    assert!(!tmp.path().join("berth/run-2").exists());

    let tmp = tempfile::tempdir().unwrap();
    let mut root = CgroupRoot::v1(tmp.path());
    root.v1_mounts.remove("pids");
    let e =
        ContainerCgroup::create_in(root, "berth/run-3", &BTreeMap::new(), &l, None).unwrap_err();
    assert!(cgroup_error(e)
        .1
        .contains("pids controller is not available"));
}

#[test]
fn a_file_that_cannot_be_written_is_an_error_naming_it() {
    let (tmp, root) = v2_root("memory");
    // A directory where memory.max should be: it cannot be written.
    let file = tmp.path().join("berth/run-3/memory.max");
    std::fs::create_dir_all(&file).unwrap();
    let e = ContainerCgroup::create_in(root, "berth/run-3", &BTreeMap::new(), &limits(), None)
        .unwrap_err();
    let (path, message) = cgroup_error(e);
    assert_eq!(path, "berth/run-3");
    let want = format!("cannot set memory.max: {}: ", file.display());
    assert!(message.starts_with(&want), "{message}");
}

#[test]
fn v1_places_each_controller_where_v1_paths_says_and_writes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rules = [DeviceRule {
        char_device: true,
        major: Some(1),
        minor: Some(3),
        access: device_filter::RW,
    }];
    let step = "slurm/uid_0/job_1/step_0/berth_c_9";
    let spec = crate::spec::CgroupSpec {
        path: "berth/run-4".into(),
        v1_paths: [("memory".to_string(), step.to_string())].into(),
        limits: limits(),
        devices: Some(rules.to_vec()),
    };
    let cg = ContainerCgroup::for_spec_in(CgroupRoot::v1(t), &spec).unwrap();
    let (cpu, devices, memory, pids) = (
        t.join("cpu/berth/run-4"),
        t.join("devices/berth/run-4"),
        t.join("memory").join(step),
        t.join("pids/berth/run-4"),
    );
    assert_eq!(
        cg.dirs(),
        [cpu.clone(), devices.clone(), memory.clone(), pids.clone()]
    );
    assert!(!t.join("blkio").exists(), "no io limit, no blkio cgroup");
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "83886080");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "150000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&pids, "pids.max"), "42");
    assert_eq!(read(&devices, "devices.deny"), "a *:* rwm");
    assert_eq!(read(&devices, "devices.allow"), "c 1:3 rw");
    assert!(cg.open_v2_dir().is_none());

    cg.add_process(NO_PID).unwrap();
    for dir in [&cpu, &devices, &memory, &pids] {
        assert_eq!(read(dir, "cgroup.procs"), NO_PID.to_string());
    }
    cg.keep();
}

#[test]
fn oom_kills_are_read_from_the_cgroups_memory_events() {
    let (tmp, root) = v2_root("memory");
    let cg = ContainerCgroup::create_in(
        root,
        "run-5",
        &BTreeMap::new(),
        &ResourceLimits::default(),
        None,
    )
    .unwrap();
    let events = "low 0\nhigh 0\nmax 9\noom 4\noom_kill 3\n";
    std::fs::write(tmp.path().join("run-5/memory.events"), events).unwrap();
    assert_eq!(cg.oom_kills(), 3);
    cg.keep();
}

#[test]
fn stale_cgroups_are_empty_ones_named_after_a_berth_that_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, procs: Option<&str>| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        if let Some(p) = procs {
            std::fs::write(dir.join("cgroup.procs"), p).unwrap();
        }
    };
    make(&format!("run-{NO_PID}"), Some(""));
    make(&format!("run-{}", std::process::id()), Some(""));
    make("run-2147483646", Some("5\n"));
    make("run-2147483645", None);
    make("other-1", Some(""));
    assert_eq!(
        placement::stale_in(tmp.path()),
        [tmp.path().join(format!("run-{NO_PID}"))]
    );
    let root = CgroupRoot::v1("/nowhere");
    assert_eq!(
        root.dirs_at("berth"),
        V1_CONTROLLERS
            .iter()
            .map(|c| Path::new("/nowhere").join(c).join("berth"))
            .collect::<Vec<_>>()
    );
}
