//! Container Device Interface specs (<https://github.com/cncf-tags/container-device-interface>):
//! JSON or YAML files in `/etc/cdi` and `/var/run/cdi` that say, per device
//! of a kind (`nvidia.com/gpu=0`), which device nodes, mounts (the driver's
//! libraries, nvidia-smi), environment and hooks a container needs.
//!
//! berth applies device nodes, mounts and env itself. It runs no hook
//! program from a spec: the two NVIDIA hooks that matter are done natively
//! (`update-ldcache` -> the container's ld.so cache is rebuilt with those
//! folders; `create-symlinks` -> the links are made), others are skipped
//! with a log line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::GpuError;
use crate::spec::{BindMount, DeviceEdits, DeviceNode};

/// One spec file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The spec format version.
    pub cdi_version: String,
    /// `vendor/class`, e.g. `nvidia.com/gpu`.
    pub kind: String,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits every container with any device of this spec gets.
    #[serde(default)]
    pub container_edits: Edits,
}

/// A named device.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The name after `kind=`: "0", "all", a UUID.
    pub name: String,
    /// Its edits.
    #[serde(default)]
    pub container_edits: Edits,
}

/// What a device needs in the container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default)]
    pub device_nodes: Vec<Node>,
    /// Bind mounts.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// OCI hooks.
    #[serde(default)]
    pub hooks: Vec<Hook>,
}

/// A device node.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Path in the container.
    pub path: PathBuf,
    /// Path on the host (default: `path`).
    pub host_path: Option<PathBuf>,
}

/// A mount.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Host path.
    pub host_path: PathBuf,
    /// Path in the container.
    pub container_path: PathBuf,
    /// Mount options (`ro`, `nosuid`, `bind`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// An OCI hook.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// When (`createContainer`, ...).
    pub hook_name: String,
    /// The program.
    pub path: PathBuf,
    /// argv.
    #[serde(default)]
    pub args: Vec<String>,
}

/// The specs of `kind` found in `dirs` (later directories win for a device
/// name, as CDI orders /var/run/cdi over /etc/cdi), and the files that could
/// not be read (named in an error only if a device is then missing).
pub fn load(dirs: &[PathBuf], kind: &str) -> (Vec<(PathBuf, Spec)>, Vec<String>) {
    let (mut specs, mut broken) = (Vec::new(), Vec::new());
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "json" | "yaml" | "yml") {
                continue;
            }
            match read_spec(&path) {
                Ok(spec) if spec.kind == kind => specs.push((path, spec)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable CDI spec skipped");
                    broken.push(format!("{}: {e}", path.display()));
                }
            }
        }
    }
    (specs, broken)
}

fn read_spec(path: &Path) -> Result<Spec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    }
}

/// Finds device `name` in `specs` (the last spec that has it) and adds its
/// edits and its spec's common edits to `out`.
pub fn apply_device(
    specs: &[(PathBuf, Spec)],
    kind: &str,
    name: &str,
    out: &mut DeviceEdits,
) -> Result<bool, GpuError> {
    let Some((file, spec, device)) = specs
        .iter()
        .rev()
        .find_map(|(f, s)| s.devices.iter().find(|d| d.name == name).map(|d| (f, s, d)))
    else {
        return Ok(false);
    };
    let bad = |what: String| GpuError::Cdi {
        file: file.display().to_string(),
        device: format!("{kind}={name}"),
        what,
    };
    for edits in [&spec.container_edits, &device.container_edits] {
        apply_edits(edits, out).map_err(bad)?;
    }
    Ok(true)
}

fn apply_edits(edits: &Edits, out: &mut DeviceEdits) -> Result<(), String> {
    for node in &edits.device_nodes {
        let host = node.host_path.clone().unwrap_or_else(|| node.path.clone());
        super::check_device_file(&host)?;
        super::check_container_dev_path(&node.path)?;
        out.add_node(DeviceNode {
            host,
            path: node.path.clone(),
        });
    }
    for m in &edits.mounts {
        if !m.container_path.is_absolute() {
            return Err(format!(
                "mount destination {} is not absolute",
                m.container_path.display()
            ));
        }
        if std::fs::symlink_metadata(&m.host_path).is_err() {
            return Err(format!(
                "mount source {} does not exist",
                m.host_path.display()
            ));
        }
        let mount = BindMount {
            source: m.host_path.clone(),
            destination: m.container_path.clone(),
            read_only: m.options.iter().any(|o| o == "ro"),
            no_exec: false,
            propagation: None,
            tree: None,
        };
        if !out.mounts.contains(&mount) {
            out.mounts.push(mount);
        }
    }
    for e in &edits.env {
        if !e.contains('=') {
            return Err(format!("env entry {e:?} is not KEY=VALUE"));
        }
        out.env.push(e.clone());
    }
    for hook in &edits.hooks {
        apply_hook(hook, out);
    }
    Ok(())
}

/// NVIDIA's hooks (`nvidia-ctk hook NAME ...` or `nvidia-cdi-hook NAME ...`),
/// done natively; anything else is skipped.
fn apply_hook(hook: &Hook, out: &mut DeviceEdits) {
    let args: Vec<&str> = hook.args.iter().map(String::as_str).collect();
    let Some(at) = args
        .iter()
        .position(|a| matches!(*a, "update-ldcache" | "create-symlinks"))
    else {
        tracing::info!(hook = %hook.path.display(), args = ?hook.args, "CDI hook skipped: berth runs no hook programs");
        return;
    };
    let mut rest = args[at + 1..].iter();
    while let Some(flag) = rest.next() {
        let value = match flag.split_once('=') {
            Some((f, v)) => Some((f, v.to_string())),
            None => rest.next().map(|v| (*flag, v.to_string())),
        };
        match (args[at], value) {
            ("update-ldcache", Some(("--folder", dir))) => {
                let dir = PathBuf::from(dir);
                if !out.ldcache_folders.contains(&dir) {
                    out.ldcache_folders.push(dir);
                }
            }
            ("create-symlinks", Some(("--link", link))) => {
                if let Some((target, path)) = link.split_once("::") {
                    let pair = (PathBuf::from(target), PathBuf::from(path));
                    if pair.1.is_absolute() && !out.symlinks.contains(&pair) {
                        out.symlinks.push(pair);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nvidia_style_yaml_and_its_hooks() {
        let yaml = r#"
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/null
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, create-symlinks, --link, libcuda.so.1::/usr/lib/libcuda.so]
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, chmod, --mode, "755", --path, /dev/dri]
  mounts:
  - hostPath: /etc/hostname
    containerPath: /etc/driver-file
    options: [ro, nosuid, nodev, bind]
"#;
        let spec: Spec = serde_yaml::from_str(yaml).unwrap();
        let specs = vec![(PathBuf::from("/etc/cdi/nvidia.yaml"), spec)];
        let mut out = DeviceEdits::default();
        assert!(apply_device(&specs, "nvidia.com/gpu", "0", &mut out).unwrap());
        assert!(!apply_device(&specs, "nvidia.com/gpu", "7", &mut out).unwrap());
        assert_eq!(out.nodes.len(), 1);
        assert_eq!(out.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
        assert_eq!(
            out.ldcache_folders,
            [PathBuf::from("/usr/lib/x86_64-linux-gnu")]
        );
        assert_eq!(
            out.symlinks,
            [(
                PathBuf::from("libcuda.so.1"),
                PathBuf::from("/usr/lib/libcuda.so")
            )]
        );
        assert!(out.mounts[0].read_only);
    }

    #[test]
    fn a_node_that_is_not_a_device_is_refused() {
        let json = r#"{"cdiVersion":"0.6.0","kind":"x.com/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/x","hostPath":"/etc/passwd"}]}}]}"#;
        let spec: Spec = serde_json::from_str(json).unwrap();
        let specs = vec![(PathBuf::from("/etc/cdi/x.json"), spec)];
        let err = apply_device(&specs, "x.com/gpu", "0", &mut DeviceEdits::default()).unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
    }
}
