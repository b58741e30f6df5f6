//! GPUs in a container: which device files a set of GPU indexes means, the
//! driver's control nodes, Container Device Interface edits, and the static
//! policy that decides who may take which GPU outside Slurm.
//!
//! Only the GPUs asked for (Slurm's allocation, or `berth run --gpus` within
//! the policy) get device nodes in the container's /dev; the container's
//! `CUDA_VISIBLE_DEVICES` counts them from 0, as the container sees them.

pub mod cdi;
pub mod gres;
pub mod policy;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use slurm_conf::GpusConfig;

use crate::spec::{DeviceEdits, DeviceNode};

/// Why the GPUs asked for cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// An index past the node's GPUs.
    #[error("there is no GPU {index} on this node (it has {count}: {source_desc})")]
    NoSuchGpu {
        /// The index asked for.
        index: u32,
        /// How many GPUs the node has.
        count: usize,
        /// Where that list came from.
        source_desc: String,
    },
    /// A device file that is missing or not a device.
    #[error("GPU {index}: {path}: {what}")]
    BadDeviceFile {
        /// The GPU index.
        index: u32,
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A CDI spec that cannot be applied.
    #[error("CDI device {device} ({file}): {what}")]
    Cdi {
        /// The spec file.
        file: String,
        /// `kind=name`.
        device: String,
        /// What is wrong.
        what: String,
    },
    /// A `--gpus` value that does not parse.
    #[error("--gpus {0:?}: expected GPU indexes like 0,1 or \"all\"")]
    BadList(String),
    /// The policy refuses.
    #[error("{0}")]
    Refused(String),
}

/// The node's GPU device files in index order, and where the list came from:
/// `[gpus] devices`, else gres.conf's `Name=gpu` lines for `node`, else the
/// `/dev/nvidiaN` files present.
pub fn device_files(config: &GpusConfig, gres_conf: &Path, node: &str) -> (Vec<PathBuf>, String) {
    if !config.devices.is_empty() {
        return (config.devices.clone(), "[gpus] devices".into());
    }
    if let Ok(text) = std::fs::read_to_string(gres_conf) {
        let files = gres::gpu_files(&text, node);
        if !files.is_empty() {
            return (files, format!("{} for node {node}", gres_conf.display()));
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("nvidia")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    (
        found.into_iter().map(|(_, p)| p).collect(),
        "/dev/nvidia*".into(),
    )
}

/// What the GPUs `indexes` need in a container: their device nodes (by CDI
/// where a spec of `config.cdi_kind` names them, else the device files), the
/// driver's control nodes beside them, and `CUDA_VISIBLE_DEVICES`.
pub fn edits_for(
    indexes: &[u32],
    config: &GpusConfig,
    files: &[PathBuf],
    files_from: &str,
) -> Result<DeviceEdits, GpuError> {
    let mut edits = DeviceEdits::default();
    if indexes.is_empty() {
        return Ok(edits);
    }
    let (specs, broken) = cdi::load(&config.cdi_spec_dirs, &config.cdi_kind);
    for &index in indexes {
        if !specs.is_empty() {
            if cdi::apply_device(&specs, &config.cdi_kind, &index.to_string(), &mut edits)? {
                continue;
            }
            return Err(GpuError::Cdi {
                file: specs
                    .iter()
                    .map(|(f, _)| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                device: format!("{}={index}", config.cdi_kind),
                what: if broken.is_empty() {
                    "no spec names this device".into()
                } else {
                    format!(
                        "no spec names this device; unreadable: {}",
                        broken.join("; ")
                    )
                },
            });
        }
        let host = files
            .get(index as usize)
            .ok_or_else(|| GpuError::NoSuchGpu {
                index,
                count: files.len(),
                source_desc: files_from.to_string(),
            })?;
        check_device_file(host).map_err(|what| GpuError::BadDeviceFile {
            index,
            path: host.display().to_string(),
            what,
        })?;
        edits.add_node(DeviceNode {
            host: host.clone(),
            path: container_dev_path(host, host.parent().unwrap_or(Path::new("/dev"))),
        });
        if let Some(dir) = host.parent() {
            for control in control_nodes(dir) {
                edits.add_node(control);
            }
        }
    }
    let visible: Vec<String> = (0..indexes.len()).map(|i| i.to_string()).collect();
    edits
        .env
        .push(format!("CUDA_VISIBLE_DEVICES={}", visible.join(",")));
    Ok(edits)
}

/// The NVIDIA driver's control nodes present in `dir` (the GPUs' directory).
fn control_nodes(dir: &Path) -> Vec<DeviceNode> {
    let mut paths: Vec<PathBuf> = [
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidia-modeset",
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect();
    if let Ok(caps) = std::fs::read_dir(dir.join("nvidia-caps")) {
        let mut more: Vec<PathBuf> = caps.flatten().map(|e| e.path()).collect();
        more.sort();
        paths.extend(more);
    }
    paths
        .into_iter()
        .filter(|p| check_device_file(p).is_ok())
        .map(|host| DeviceNode {
            path: container_dev_path(&host, dir),
            host,
        })
        .collect()
}

/// Where a host device file appears in the container: at the same path when
/// it is under /dev, else under /dev at its place relative to `dir`.
fn container_dev_path(host: &Path, dir: &Path) -> PathBuf {
    if host.starts_with("/dev") {
        return host.to_path_buf();
    }
    Path::new("/dev").join(
        host.strip_prefix(dir)
            .unwrap_or(host.file_name().map(Path::new).unwrap_or(host)),
    )
}

/// A host path that must be a character or block device.
pub(crate) fn check_device_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = meta.file_type();
    if t.is_char_device() || t.is_block_device() {
        Ok(())
    } else {
        Err(format!("{} is not a device file", path.display()))
    }
}

/// A container path for a device node: absolute, under /dev, no `..`.
pub(crate) fn check_container_dev_path(path: &Path) -> Result<(), String> {
    let ok = path.starts_with("/dev/")
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(format!("device path {} is not under /dev", path.display()))
    }
}

/// Parses a `--gpus` list: `0,2`, `1-3`, or `all`; None stands for "all".
pub fn parse_list(text: &str) -> Result<Option<Vec<u32>>, GpuError> {
    if text == "all" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (lo.parse::<u32>(), hi.parse::<u32>()) else {
            return Err(GpuError::BadList(text.to_string()));
        };
        if a > b || b - a > 1024 {
            return Err(GpuError::BadList(text.to_string()));
        }
        for i in a..=b {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gpu_lists() {
        assert_eq!(parse_list("0,2").unwrap(), Some(vec![0, 2]));
        assert_eq!(parse_list("1-3,1").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(parse_list("all").unwrap(), None);
        assert!(parse_list("gpu0").is_err());
        assert!(parse_list("").is_err());
    }

    #[test]
    fn device_paths_land_under_dev() {
        assert_eq!(
            container_dev_path(Path::new("/dev/nvidia3"), Path::new("/dev")),
            PathBuf::from("/dev/nvidia3")
        );
        assert_eq!(
            container_dev_path(
                Path::new("/srv/fake/nvidia-caps/cap1"),
                Path::new("/srv/fake")
            ),
            PathBuf::from("/dev/nvidia-caps/cap1")
        );
        assert!(check_container_dev_path(Path::new("/dev/../etc/x")).is_err());
        assert!(check_container_dev_path(Path::new("/etc/x")).is_err());
        assert!(check_container_dev_path(Path::new("/dev/dri/card0")).is_ok());
    }

    #[test]
    fn a_missing_index_says_how_many_there_are() {
        let config = GpusConfig {
            cdi_spec_dirs: vec![],
            ..Default::default()
        };
        let err = edits_for(&[2], &config, &[PathBuf::from("/dev/null")], "test").unwrap_err();
        assert!(
            err.to_string()
                .contains("there is no GPU 2 on this node (it has 1"),
            "{err}"
        );
        let edits = edits_for(&[0], &config, &[PathBuf::from("/dev/null")], "test").unwrap();
        assert_eq!(edits.env, ["CUDA_VISIBLE_DEVICES=0"]);
        assert_eq!(edits.nodes[0].path, PathBuf::from("/dev/null"));
    }
}
