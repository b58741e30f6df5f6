//! Joining a running container from outside: what a Slurm task (the
//! SPANK plugin), a step's entrypoint and a login session (`berth
//! login-service`) do to land in a keeper's container: its cgroup, its
//! namespaces, and (remapped) a user namespace of their own.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::slurm::record::KeeperRecord;

/// Puts the calling process (root, single-threaded) into the container of
/// `reply`: its cgroup (limits, device filter), its mount, ipc, uts,
/// cgroup (and network) namespaces, and its pid namespace for the
/// process's children; checks it stands in the container's root.
pub fn enter_container(reply: &KeeperRecord) -> Result<(), String> {
    let pid = reply.pid;
    let pidfd = reply
        .pidfd()
        .map_err(|e| format!("the step's container is gone ({e})"))?;
    // Into the container's cgroup (its limits and device filter) before
    // joining its cgroup namespace, whose root that cgroup is.
    for dir in container_cgroup_dirs(reply) {
        fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| format!("cannot enter the container's cgroup {}: {e}", dir.display()))?;
    }
    // setns gives the task its new mount namespace's root, which is the
    // container's only when slurmstepd's own root is its namespace's (not
    // under chroot): check that the task really stands in the container.
    let container_root = root_identity(&format!("/proc/{pid}/root"))
        .map_err(|e| format!("the step's container is gone ({e})"))?;
    // Its mount, ipc, uts and cgroup namespaces, and the container's pid
    // namespace for the task's children (see relay.rs): a view's record
    // names the container's own keeper for it.
    use nix::sched::CloneFlags;
    let pid_namespace = match reply.pid_namespace {
        Some(_) => reply
            .pid_namespace_keeper()
            .pidfd()
            .map_err(|e| format!("the named container is gone ({e})"))?,
        None => pidfd
            .try_clone()
            .map_err(|e| format!("the step's container is gone ({e})"))?,
    };
    // Never the host's: a record naming a keeper outside any container
    // would leave the task's processes among the host's.
    let host_pid_namespace = fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).ok();
    let keeper = reply.pid_namespace_keeper().pid;
    if fs::metadata(format!("/proc/{keeper}/ns/pid"))
        .map(|m| m.ino())
        .ok()
        == host_pid_namespace
    {
        return Err(
            "the container's keeper is not in a pid namespace of its own; tell the cluster admins"
                .into(),
        );
    }
    // The network namespace is the container's own keeper's, like its
    // pid namespace (a view's keeper stays in the host's).
    let network = match reply.own_network {
        true => CloneFlags::CLONE_NEWNET,
        false => CloneFlags::empty(),
    };
    nix::sched::setns(
        pidfd.as_fd(),
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .and_then(|()| nix::sched::setns(pid_namespace.as_fd(), CloneFlags::CLONE_NEWPID | network))
    .map_err(|e| format!("cannot enter the step's container: {e}"))?;
    if root_identity("/").ok() != Some(container_root) {
        return Err("the task did not land in the container's root filesystem (is slurmd running under chroot?); tell the cluster admins".into());
    }

    Ok(())
}

/// --container-remap-root, `[login] remap_root`: the user namespace a
/// task will be root of, mapped to the job's user and owned by them (see
/// `sys::userns_owned_by`). Made as root before joining the container (it
/// needs the host's /proc).
pub fn remapped_user_namespace(uid: u32, gid: u32) -> Result<std::os::fd::OwnedFd, String> {
    crate::sys::userns_owned_by(uid, gid)
        .map_err(|e| format!("--container-remap-root: cannot create a user namespace: {e}"))
}

/// The task (already the job's user, so never dumpable) joins `userns`
/// (from `remapped_user_namespace`) and is root there, with capabilities
/// there only (set by the confinement that follows). The container's mount
/// namespace belongs to the host's user namespace, so this root can change
/// no mount; outside, the task is still the user.
pub fn enter_remapped_user_namespace(userns: &std::os::fd::OwnedFd) -> Result<(), String> {
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("--container-remap-root: cannot enter the user namespace: {e}"))
}

/// Ends the keeper of this step and removes its state.
/// The device and inode of a directory, to tell two roots apart.
fn root_identity(path: &str) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// The container's cgroup directories, as the helper reported them.
fn container_cgroup_dirs(record: &KeeperRecord) -> Vec<PathBuf> {
    record
        .cgroup_dirs
        .iter()
        .filter(|d| d.starts_with("/sys/fs/cgroup"))
        .cloned()
        .collect()
}
