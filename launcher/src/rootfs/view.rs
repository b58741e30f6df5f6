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
    if let Some(dir) = &view.workdir {
        sys.make_user_path(dir, super::user_paths::Kind::Dir, &view.identity)
            .map_err(at("cannot create working directory", dir))?;
    }
    Ok(())
}
