//! A Slurm step's view into a named container made by an earlier step (see
//! [`StepViewSpec`]): the step's keeper joins the container's mount
//! namespace, makes a copy of it for itself, and puts a fresh /dev with
//! this step's devices, its mounts, its working directory and its own
//! cgroup file system in it.
//! The root filesystem (the overlay and its writable layer) is the named
//! container's, so files persist across the steps of the job.

use std::path::Path;

use super::{at, attach_mounts, clone_mount_sources, dev, RootfsError};
use crate::spec::StepViewSpec;
use crate::syscall::Syscall;

/// Host things the view gets, opened while the host is still visible.
pub struct ViewSources {
    standard_devices: Vec<std::os::fd::OwnedFd>,
    nodes: Vec<std::os::fd::OwnedFd>,
    mounts: Vec<(std::os::fd::OwnedFd, bool)>,
}

/// Clones the view's device nodes and mount sources (in the host's mount
/// namespace, before joining the container's).
pub fn open_sources(
    sys: &dyn Syscall,
    view: &StepViewSpec,
    is_dir: &dyn Fn(&Path) -> Option<bool>,
) -> Result<ViewSources, RootfsError> {
    let standard_devices = dev::clone_host_devices(sys, None)
        .map_err(at("cannot clone host device under", Path::new("/dev")))?;
    let nodes = super::clone_device_nodes(sys, &view.devices.nodes)?;
    let mounts = clone_mount_sources(sys, &view.mounts, is_dir)?;
    Ok(ViewSources {
        standard_devices,
        nodes,
        mounts,
    })
}

/// Builds the view in the step's own copy of the container's mount
/// namespace (the caller has joined it and unshared a copy).
pub fn build(
    sys: &dyn Syscall,
    view: &StepViewSpec,
    sources: ViewSources,
) -> Result<(), RootfsError> {
    super::make_mounts_private(sys)?;
    // A new /dev over the container's: the earlier step's devices, /dev/shm
    // and terminals stay out of this step's sight.
    dev::setup_dev(sys, sources.standard_devices, view.identity.privileged)
        .map_err(at("cannot set up", Path::new("/dev")))?;
    for (node, fd) in view.devices.nodes.iter().zip(sources.nodes) {
        dev::bind_fd(sys, fd, &node.path).map_err(at("cannot bind device onto", &node.path))?;
    }
    if view.cgroup.is_some() && crate::limits::cgroup::is_v2() {
        super::mount_own_cgroup(sys)?;
    }
    attach_mounts(sys, &view.mounts, sources.mounts, Some(&view.identity))?;
    super::mount_tmpfs(sys, &view.tmpfs_mounts, &view.identity)?;
    if let Some(dir) = &view.tasks.workdir {
        sys.make_user_path(dir, super::user_paths::Kind::Dir, &view.identity)
            .map_err(at("cannot create working directory", dir))?;
    }
    if view.read_only {
        super::make_root_read_only(sys)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BindMount, DeviceEdits, DeviceNode, Identity, TmpfsMount};
    use crate::syscall::RecordingSyscall;
    use std::path::PathBuf;

    fn view() -> StepViewSpec {
        StepViewSpec {
            devices: DeviceEdits {
                nodes: vec![DeviceNode {
                    host: PathBuf::from("/dev/nvidia3"),
                    path: PathBuf::from("/dev/nvidia0"),
                }],
                ..Default::default()
            },
            mounts: vec![BindMount {
                source: PathBuf::from("/scratch"),
                destination: PathBuf::from("/data"),
                read_only: true,
                no_exec: false,
                propagation: None,
                tree: None,
            }],
            tmpfs_mounts: vec![TmpfsMount {
                destination: PathBuf::from("/scratch"),
                options: vec!["size=1m".into()],
            }],
            tasks: crate::spec::SlurmTaskRules {
                workdir: Some(PathBuf::from("/work")),
                job_env: vec![],
            },
            identity: Identity::job_user(1000),
            cgroup: None,
            read_only: false,
        }
    }

    fn position(calls: &[String], wanted: impl Fn(&str) -> bool) -> usize {
        calls
            .iter()
            .position(|c| wanted(c))
            .unwrap_or_else(|| panic!("no such call in {calls:#?}"))
    }

    #[test]
    fn a_view_opens_the_hosts_things_first_then_builds_its_own_dev_and_mounts() {
        let sys = RecordingSyscall::default();
        let view = view();
        let sources = open_sources(&sys, &view, &|p| Some(p.starts_with("/scratch"))).unwrap();
        let opened = sys.calls().len();
        assert!(sys
            .calls()
            .iter()
            .any(|c| c.starts_with("clone_tree /dev/nvidia3")));
        assert!(sys
            .calls()
            .iter()
            .any(|c| c.starts_with("clone_tree -r /scratch")));
        build(&sys, &view, sources).unwrap();
        let calls = sys.calls();
        let built = &calls[opened..];
        // Its copy of the namespace is private before anything is mounted.
        assert!(
            built[0].starts_with("mount - / - MsFlags(MS_REC | MS_PRIVATE)"),
            "{built:#?}"
        );
        let dev = position(built, |c| c.starts_with("mount tmpfs /dev tmpfs"));
        // This step's GPU, as the container sees it, on the fresh /dev.
        let gpu = position(built, |c| {
            c.starts_with("attach ") && c.ends_with(" /dev/nvidia0")
        });
        assert!(dev < gpu);
        let data = position(built, |c| c.starts_with("attach ") && c.ends_with(" /data"));
        assert!(position(built, |c| c == "readonly /data") > data);
        assert!(
            built.iter().any(|c| c.starts_with("mkdir /work")),
            "{built:#?}"
        );
    }

    #[test]
    fn a_read_only_view_remounts_its_root_last_with_a_tmp_of_its_own() {
        let sys = RecordingSyscall::default();
        let read_only = StepViewSpec {
            read_only: true,
            ..view()
        };
        let sources = open_sources(&sys, &read_only, &|p| Some(p.starts_with("/scratch"))).unwrap();
        build(&sys, &read_only, sources).unwrap();
        let calls = sys.calls();
        let remount = position(&calls, |c| {
            c.starts_with("mount - / - MsFlags(MS_RDONLY | MS_REMOUNT | MS_BIND")
        });
        assert!(position(&calls, |c| c.ends_with(" /data")) < remount);
        assert!(position(&calls, |c| c.starts_with("mount tmpfs /tmp tmpfs")) > remount);
        // Not asked: the container's files stay writable.
        let sys = RecordingSyscall::default();
        let sources = open_sources(&sys, &view(), &|p| Some(p.starts_with("/scratch"))).unwrap();
        build(&sys, &view(), sources).unwrap();
        assert!(!sys
            .calls()
            .iter()
            .any(|c| c.contains("MS_RDONLY | MS_REMOUNT")));
    }
}
