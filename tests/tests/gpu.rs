//! GPUs outside Slurm: the static policy of berth.toml's `[gpus]`, device
//! nodes of fake GPUs (NVIDIA's major 195, no driver behind them), and
//! Container Device Interface specs with a fake driver library directory.

use std::path::{Path, PathBuf};

use berth_e2e::*;

/// Fake GPU device nodes 0..count and nvidiactl in `<sandbox>/dev`.
fn fake_gpus(s: &Sandbox, count: u64) -> PathBuf {
    let dir = s.path().join("dev");
    let names: Vec<String> = (0..count).map(|i| format!("nvidia{i}")).collect();
    let mut nodes: Vec<(&str, u64, u64)> = names
        .iter()
        .zip(0..)
        .map(|(n, i)| (n.as_str(), 195, i))
        .collect();
    nodes.push(("nvidiactl", 195, 255));
    nodes.push(("nvidia-caps/nvidia-cap1", 236, 1));
    make_char_devices(&dir, &nodes);
    dir
}

fn devices_toml(dir: &Path, count: u64) -> String {
    let list: Vec<String> = (0..count)
        .map(|i| format!("\"{}/nvidia{i}\"", dir.display()))
        .collect();
    format!("devices = [{}]\n", list.join(", "))
}

const LIST_DEVICES: &str =
    "for f in /dev/nvidia* /dev/nvidia-caps/*; do printf '%s ' $f; done; echo CUDA=$CUDA_VISIBLE_DEVICES";

#[test]
fn the_static_policy_gives_users_their_gpus_and_never_a_reserved_one() {
    require_root!();
    let s = Sandbox::new();
    let dir = fake_gpus(&s, 4);
    s.write_config(&format!(
        "[gpus]\n{}reserved = [3]\ncdi_spec_dirs = []\n[gpus.users]\n\"{TEST_USER}\" = [1, 3]\nnobody = [0]\n",
        devices_toml(&dir, 4)
    ));
    let image = s.standard_image();
    let image = image.to_str().unwrap();
    // The user's own GPU: only it (and the driver's control nodes) appear.
    let text = ok(s.berth_as_user(&["run", "--gpus", "1", image, "sh", "-c", LIST_DEVICES]));
    assert_eq!(
        text.trim(),
        "/dev/nvidia-caps /dev/nvidia1 /dev/nvidiactl /dev/nvidia-caps/nvidia-cap1 CUDA=0",
        "{text}"
    );
    // "all" means the user's GPUs, never the reserved one.
    let text = ok(s.berth_as_user(&["run", "--gpus", "all", image, "sh", "-c", LIST_DEVICES]));
    assert!(
        text.contains("/dev/nvidia1 ") && !text.contains("nvidia3"),
        "{text}"
    );
    // Someone else's GPU, a reserved one, one the node lacks: refused, with why.
    for (asked, why) in [
        ("0", "GPU 0 is not granted to berth-test (yours: 1)"),
        ("3", "GPU 3 is reserved for the system"),
        ("9", "there is no GPU 9 on this node (it has 4"),
        ("x", "--gpus \"x\": expected GPU indexes"),
    ] {
        let out = s.berth_as_user(&["run", "--gpus", asked, image, "true"]);
        assert_eq!(out.status.code(), Some(125), "{asked}");
        assert!(stderr(&out).contains(why), "{asked}: {}", stderr(&out));
    }
    // Root acting for the user (--user, as for a login session) is held to
    // the same policy; root for itself is not.
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    let out = s.berth(&["run", "--user", &user, "--gpus", "3", image, "true"]);
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
    let text = ok(s.berth(&["run", "--gpus", "3", image, "sh", "-c", LIST_DEVICES]));
    assert!(text.contains("/dev/nvidia3 "), "{text}");
    // Without --gpus there is no GPU device at all.
    let text = ok(s.berth_as_user(&["run", image, "sh", "-c", "ls /dev | grep -c nvidia || true"]));
    assert_eq!(text.trim(), "0");
}

/// A copy of a real shared library (zlib: soname libz.so.1) as the fake driver's.
fn fake_driver(s: &Sandbox) -> PathBuf {
    let lib = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libz.so.1.") && !p.is_symlink())
        })
        .expect("zlib's shared library");
    let driver = s.path().join("driver");
    std::fs::create_dir_all(driver.join("lib")).unwrap();
    std::fs::copy(&lib, driver.join("lib/libnvidia-fake.so.555.42")).unwrap();
    std::fs::write(
        driver.join("nvidia-smi"),
        "#!/bin/sh\necho \"fake nvidia-smi sees $(ls /dev | grep -c 'nvidia[0-9]') GPU\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        driver.join("nvidia-smi"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    driver
}

#[test]
fn a_cdi_spec_brings_device_nodes_driver_files_env_and_the_library_cache() {
    require_root!();
    let s = Sandbox::new();
    let dir = fake_gpus(&s, 2);
    let driver = fake_driver(&s);
    let cdi = s.path().join("cdi");
    std::fs::create_dir(&cdi).unwrap();
    let (d, drv) = (dir.display(), driver.display());
    std::fs::write(
        cdi.join("nvidia.yaml"),
        format!(
            r#"cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - {{path: /dev/nvidia0, hostPath: {d}/nvidia0}}
- name: "1"
  containerEdits:
    deviceNodes:
    - {{path: /dev/nvidia1, hostPath: {d}/nvidia1}}
containerEdits:
  env: ["NVIDIA_DRIVER_CAPABILITIES=compute,utility"]
  deviceNodes:
  - {{path: /dev/nvidiactl, hostPath: {d}/nvidiactl}}
  mounts:
  - {{hostPath: {drv}/lib/libnvidia-fake.so.555.42, containerPath: /usr/lib/x86_64-linux-gnu/libnvidia-fake.so.555.42, options: [ro, nosuid, nodev, bind]}}
  - {{hostPath: {drv}/nvidia-smi, containerPath: /bin/nvidia-smi, options: [ro, nosuid, nodev, bind]}}
  hooks:
  - {{hookName: createContainer, path: /usr/bin/nvidia-ctk, args: [nvidia-ctk, hook, create-symlinks, --link, libnvidia-fake.so.555.42::/usr/lib/x86_64-linux-gnu/libnvidia-fake.so.1]}}
  - {{hookName: createContainer, path: /usr/bin/nvidia-ctk, args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]}}
  - {{hookName: createContainer, path: /usr/bin/some-vendor-hook, args: [some-vendor-hook, --do-things]}}
"#
        ),
    )
    .unwrap();
    // A broken spec of another vendor does not stop this one.
    std::fs::write(cdi.join("other.json"), "{ not json").unwrap();
    s.write_config(&format!(
        "[gpus]\n{}cdi_spec_dirs = [\"{}\"]\n[gpus.users]\n\"*\" = [0, 1]\n",
        devices_toml(&dir, 2),
        cdi.display()
    ));
    let image = s.standard_image();
    let image = image.to_str().unwrap();
    let script = "nvidia-smi; ls /dev | grep nvidia | tr '\\n' ' '; echo; \
                  readlink /usr/lib/x86_64-linux-gnu/libnvidia-fake.so.1; \
                  grep -c /usr/lib/x86_64-linux-gnu/libz.so.1 /etc/ld.so.cache; \
                  echo $NVIDIA_DRIVER_CAPABILITIES $CUDA_VISIBLE_DEVICES";
    for (who, out) in [
        (
            "root",
            s.berth(&["run", "--gpus", "1", image, "sh", "-c", script]),
        ),
        (
            "user",
            s.berth_as_user(&["run", "--gpus", "1", image, "sh", "-c", script]),
        ),
    ] {
        let text = ok(out);
        assert_eq!(
            text,
            "fake nvidia-smi sees 1 GPU\nnvidia1 nvidiactl \nlibnvidia-fake.so.555.42\n1\ncompute,utility 0\n",
            "{who}"
        );
    }
    // The driver files are read-only in the container.
    let out = s.berth(&[
        "run",
        "--gpus",
        "0",
        image,
        "sh",
        "-c",
        "echo x > /bin/nvidia-smi",
    ]);
    assert!(!out.status.success());
    // A spec naming a host file that is not a device is refused, naming it.
    std::fs::write(
        cdi.join("nvidia.yaml"),
        "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - {path: /dev/nvidia0, hostPath: /etc/shadow}\n",
    )
    .unwrap();
    let out = s.berth(&["run", "--gpus", "0", image, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("CDI device nvidia.com/gpu=0")
            && stderr(&out).contains("/etc/shadow is not a device file"),
        "{}",
        stderr(&out)
    );
    // A GPU the spec does not name is an error, not a silent fallback.
    let out = s.berth(&["run", "--gpus", "1", image, "true"]);
    assert!(
        stderr(&out).contains("no spec names this device"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_device_cgroup_denies_a_gpu_the_container_was_not_given() {
    require_root!();
    let s = Sandbox::new();
    let dir = fake_gpus(&s, 2);
    s.write_config(&format!(
        "[gpus]\n{}cdi_spec_dirs = []\n[limits]\ncgroup_parent = \"berth-test-{}\"\n",
        devices_toml(&dir, 2),
        std::process::id()
    ));
    let image = s.standard_image();
    let image = image.to_str().unwrap();
    // The host directory with both fake GPUs is mounted in: the node of the
    // GPU not given is there, but the device cgroup refuses it (EPERM); the
    // given one opens as far as the (absent) driver goes (ENXIO).
    let mount = format!("{}:/hostdev", dir.display());
    let text = ok(s.berth(&[
        "run", "--gpus", "0", "-m", &mount, image, "sh", "-c",
        "berth-probe open /dev/nvidia0; berth-probe open /hostdev/nvidia1; berth-probe open /hostdev/nvidia0; berth-probe open /dev/null",
    ]));
    assert_eq!(text, "ENXIO\nEPERM\nENXIO\nOK\n");
    // Nothing of berth's cgroups is left.
    let parent = format!("berth-test-{}", std::process::id());
    for controller in ["memory", "pids", "devices", "cpu", "blkio", "unified"] {
        let p = Path::new("/sys/fs/cgroup").join(controller).join(&parent);
        if p.exists() {
            let children: Vec<_> = std::fs::read_dir(&p)
                .unwrap()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name())
                .collect();
            assert!(children.is_empty(), "{}: {children:?}", p.display());
            let _ = std::fs::remove_dir(&p);
        }
    }
}
