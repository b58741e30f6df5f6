//! The container's root filesystem, built inside its private mount namespace:
//! overlay of the image layers, pivot_root, /proc, /dev, /sys, masks, the
//! user's bind mounts, and read-only root when asked.
//!
//! Everything after pivot_root resolves paths inside the container's own root,
//! so a symlink in a hostile image can never point a mount at a host path;
//! host sources are cloned as detached mounts (`open_tree`) before the pivot
//! and attached (`move_mount`) after it.

pub mod dev;
pub mod overlay;
pub mod proc;
pub mod user_paths;
pub mod view;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::spec::ContainerSpec;
use crate::syscall::Syscall;

/// A failed step of building the root filesystem.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {source}")]
pub struct RootfsError {
    /// What was being done.
    pub step: &'static str,
    /// On which path.
    pub path: String,
    /// Why it failed.
    pub source: io::Error,
}

fn at<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError {
        step,
        path: path.display().to_string(),
        source,
    }
}

/// The image's layers as the container identity's: the idmapped copy of
/// their directory the builder made, attached at `base/owned`, with the
/// layers named below it.
fn attach_owned_layers(
    sys: &dyn Syscall,
    spec: &ContainerSpec,
    owned: &crate::spec::OwnedLayers,
    base: &Path,
) -> Result<Vec<PathBuf>, RootfsError> {
    let target = base.join("owned");
    sys.mkdir_all(&target, 0o700)
        .map_err(at("cannot create", &target))?;
    let tree = owned
        .tree
        .try_clone()
        .map_err(at("cannot open the image layers in", &owned.dir))?;
    sys.attach_tree(tree, &target)
        .map_err(at("cannot attach the image layers on", &target))?;
    spec.layers
        .iter()
        .map(|layer| match layer.file_name() {
            Some(name) if layer.parent() == Some(&owned.dir) => Ok(target.join(name)),
            _ => Err(at("not a layer of", &owned.dir)(
                io::ErrorKind::InvalidInput.into(),
            )),
        })
        .collect()
}

/// Builds the root filesystem and pivots into it. Runs in the container's
/// init, in its new mount and pid namespaces, with the privileges to mount.
pub fn prepare(
    sys: &dyn Syscall,
    spec: &ContainerSpec,
    is_dir: &dyn Fn(&Path) -> Option<bool>,
) -> Result<(), RootfsError> {
    let slash = Path::new("/");
    make_mounts_private(sys)?;

    let base = &spec.mount_point;
    match &spec.disk_layer {
        // A named container's: its own filesystem, kept on disk.
        Some(layer) => {
            let layer = layer
                .try_clone()
                .map_err(at("cannot open the writable layer for", base))?;
            sys.attach_tree(layer, base)
                .map_err(at("cannot attach the writable layer on", base))?;
        }
        None => {
            let tmpfs_options = format!("mode=755,size={}", spec.upper_size);
            sys.mount(
                Some(Path::new("tmpfs")),
                base,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&tmpfs_options),
            )
            .map_err(at("cannot mount the writable layer's tmpfs on", base))?;
        }
    }
    let (upper, work, root) = (base.join("upper"), base.join("work"), base.join("root"));
    for dir in [&upper, &work, &root] {
        sys.mkdir_all(dir, 0o755)
            .map_err(at("cannot create", dir))?;
    }
    let mut layers = match &spec.owned_layers {
        Some(owned) => {
            // The root directory is the writable layer's: the identity's too.
            sys.give(&upper, owned.owner)
                .map_err(at("cannot give the writable layer to its user:", &upper))?;
            attach_owned_layers(sys, spec, owned, base)?
        }
        None => spec.layers.clone(),
    };
    if let Some(tree) = spec.image_tree {
        // A directory image: mounted from what the user's rights opened.
        let image = base.join("image");
        sys.mkdir_all(&image, 0o755)
            .map_err(at("cannot create", &image))?;
        // SAFETY: the spec's image tree is this process's own copy of the
        // descriptor (inherited through the fork), attached once, here.
        #[allow(unsafe_code)]
        let tree = unsafe { crate::sys::take_fd(tree) };
        sys.attach_tree(tree, &image)
            .map_err(at("cannot attach the image directory on", &image))?;
        layers.push(image);
    }
    let overlay = overlay::overlay_mount(&layers, &upper, &work, !spec.identity.privileged)
        .map_err(|e| RootfsError {
            step: "cannot mount the image overlay on",
            path: root.display().to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
    if let Some(dir) = &overlay.layer_dir {
        sys.chdir(dir)
            .map_err(at("cannot enter the layer store", dir))?;
    }
    sys.mount(
        Some(Path::new("overlay")),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&overlay.options),
    )
    .map_err(at("cannot mount the image overlay on", &root))?;

    let own_cgroup_v2 = spec.cgroup.is_some() && crate::limits::cgroup::is_v2();
    // Host things the container gets, opened while the host is still visible.
    let device_fds = dev::clone_host_devices(sys, spec.console.as_deref())
        .map_err(at("cannot clone host device under", Path::new("/dev")))?;
    let sys_fd = sys
        .clone_tree(Path::new("/sys"), true)
        .map_err(at("cannot clone", Path::new("/sys")))?;
    let node_fds = clone_device_nodes(sys, &spec.devices.nodes)?;
    let device_mount_fds = clone_mount_sources(sys, &spec.devices.mounts, is_dir)?;
    let mount_fds = clone_mount_sources(sys, &spec.mounts, is_dir)?;
    let ldconfig_fd = match spec.devices.ldcache_folders.is_empty() {
        true => None,
        false => {
            let ldconfig = host_ldconfig();
            Some(
                sys.open_executable(&ldconfig)
                    .map_err(at("cannot open", &ldconfig))?,
            )
        }
    };

    let new_proc = root.join("proc");
    proc::mount_proc(sys, &new_proc, spec.proc_hidepid).map_err(at("cannot mount", &new_proc))?;

    sys.chdir(&root).map_err(at("cannot enter", &root))?;
    sys.pivot_to_cwd()
        .map_err(at("cannot pivot_root into", &root))?;

    dev::setup_dev(sys, device_fds, spec.identity.privileged)
        .map_err(at("cannot set up", Path::new("/dev")))?;
    for (node, fd) in spec.devices.nodes.iter().zip(node_fds) {
        dev::bind_fd(sys, fd, &node.path).map_err(at("cannot bind device onto", &node.path))?;
    }
    proc::mount_sys(sys, sys_fd).map_err(at("cannot mount", Path::new("/sys")))?;
    if own_cgroup_v2 {
        mount_own_cgroup(sys)?;
    }
    proc::protect_kernel_files(sys, is_dir)
        .map_err(at("cannot mask kernel files under", Path::new("/proc")))?;

    // A device's driver files come first, and the library cache is rebuilt
    // before any of the user's mounts exist.
    attach_mounts(sys, &spec.devices.mounts, device_mount_fds, None)?;
    for (target, link) in &spec.devices.symlinks {
        if let Some(parent) = link.parent() {
            sys.mkdir_all(parent, 0o755)
                .map_err(at("cannot create", parent))?;
        }
        sys.symlink(target, link)
            .map_err(at("cannot create symlink", link))?;
    }
    if let Some(fd) = ldconfig_fd {
        let mut args = vec!["ldconfig".to_string()];
        args.extend(
            spec.devices
                .ldcache_folders
                .iter()
                .map(|f| f.display().to_string()),
        );
        sys.run_confined(fd, &args, spec.seccomp_program.as_deref())
            .map_err(at(
                "cannot rebuild the library cache with",
                &spec.devices.ldcache_folders[0],
            ))?;
    }
    // In the container's own files only: before the user's mounts. Only
    // where every file is the identity's (apt's directories too), which is
    // never the host's real root (its store files are shown as they are).
    let files_are_identitys = spec.owned_layers.is_some() || !spec.identity.privileged;
    if files_are_identitys && !spec.read_only {
        keep_apt_as_root(sys, &spec.identity, is_dir)?;
    }
    attach_mounts(sys, &spec.mounts, mount_fds, Some(&spec.identity))?;
    mount_tmpfs(sys, &spec.tmpfs_mounts, &spec.identity)?;
    sys.make_user_path(&spec.process.cwd, user_paths::Kind::Dir, &spec.identity)
        .map_err(at("cannot create working directory", &spec.process.cwd))?;
    if spec.read_only {
        make_root_read_only(sys)?;
    }
    sys.sethostname(&spec.hostname)
        .map_err(at("cannot set hostname, at", slash))?;
    if spec.own_network {
        crate::sys::bring_up_loopback().map_err(at(
            "cannot bring up the loopback of the container's network, at",
            slash,
        ))?;
    }
    Ok(())
}

/// Where apt reads its configuration, and what berth puts there.
const APT_CONF_DIR: &str = "/etc/apt/apt.conf.d";
/// apt runs its downloads as `_apt`; a container's root cannot switch to
/// another user (one id is mapped), so apt would fail. enroot does the same.
const APT_STAY_ROOT: &[u8] =
    b"// berth: this container's root cannot switch users; apt stays root.\nAPT::Sandbox::User \"root\";\n";

/// Tells the image's apt (if it has one) not to drop privileges. Written
/// after the pivot (an image's symlinks lead inside it), as the identity,
/// never over a file of the image's. Called only where the image's files
/// are the identity's and the identity is not the host's root (which can
/// switch users, and whose container shows the files as they are).
fn keep_apt_as_root(
    sys: &dyn Syscall,
    identity: &crate::spec::Identity,
    is_dir: &dyn Fn(&Path) -> Option<bool>,
) -> Result<(), RootfsError> {
    let dir = Path::new(APT_CONF_DIR);
    if is_dir(dir) != Some(true) || sys.is_symlink(dir) {
        return Ok(());
    }
    let file = dir.join("zz-berth-apt-stays-root");
    match sys.write_new_file(&file, APT_STAY_ROOT, identity) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(at("cannot write", &file)(e)),
        _ => Ok(()),
    }
}

/// Makes every mount private: nothing mounted after may propagate back to
/// the host (or to another step's copy of the namespace).
fn make_mounts_private(sys: &dyn Syscall) -> Result<(), RootfsError> {
    let slash = Path::new("/");
    sys.mount(
        None,
        slash,
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(at("cannot make mounts private at", slash))
}

/// Mounts the container's own cgroup (the root of its cgroup namespace)
/// read-only at /sys/fs/cgroup: its limits and usage can be read, not changed.
fn mount_own_cgroup(sys: &dyn Syscall) -> Result<(), RootfsError> {
    let cgroup = Path::new("/sys/fs/cgroup");
    sys.mount(
        Some(Path::new("cgroup2")),
        cgroup,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None,
    )
    .map_err(at("cannot mount", cgroup))
}

/// Clones the host device files of GPUs and other devices (before pivot_root).
fn clone_device_nodes(
    sys: &dyn Syscall,
    nodes: &[crate::spec::DeviceNode],
) -> Result<Vec<OwnedFd>, RootfsError> {
    nodes
        .iter()
        .map(|node| {
            sys.clone_tree(&node.host, false)
                .map_err(at("cannot open device", &node.host))
        })
        .collect()
}

/// Clones the sources of `mounts` (before pivot_root); with each, whether it is a directory.
fn clone_mount_sources(
    sys: &dyn Syscall,
    mounts: &[crate::spec::BindMount],
    is_dir: &dyn Fn(&Path) -> Option<bool>,
) -> Result<Vec<(OwnedFd, bool)>, RootfsError> {
    mounts
        .iter()
        .map(|m| {
            if let Some(tree) = &m.tree {
                // Cloned by root from what the user's rights opened: a copy
                // of that descriptor (attaching consumes it).
                let fd = tree
                    .fd
                    .try_clone()
                    .map_err(at("cannot open mount source", &m.source))?;
                return Ok((fd, tree.is_dir));
            }
            let fd = sys
                .clone_tree(&m.source, true)
                .map_err(at("cannot open mount source", &m.source))?;
            Ok((fd, is_dir(&m.source) == Some(true)))
        })
        .collect()
}

/// Attaches cloned mount sources at their destinations (after pivot_root).
/// The user's mount points are made as [`user_paths`] says; a device's
/// (from berth.toml's CDI specs) by root.
fn attach_mounts(
    sys: &dyn Syscall,
    mounts: &[crate::spec::BindMount],
    fds: Vec<(OwnedFd, bool)>,
    users: Option<&crate::spec::Identity>,
) -> Result<(), RootfsError> {
    for (m, (fd, source_is_dir)) in mounts.iter().zip(fds) {
        let target = &m.destination;
        let kind = match source_is_dir {
            true => user_paths::Kind::Dir,
            false => user_paths::Kind::File,
        };
        match users {
            Some(identity) => sys.make_user_path(target, kind, identity),
            None => sys.make_path(target, kind),
        }
        .map_err(at("cannot create mount point", target))?;
        sys.attach_tree(fd, target)
            .map_err(at("cannot bind-mount onto", target))?;
        if m.read_only {
            sys.make_readonly(target)
                .map_err(at("cannot make read-only", target))?;
        }
        if m.no_exec {
            sys.make_noexec(target)
                .map_err(at("cannot make noexec", target))?;
        }
        if let Some(flags) = m.propagation.and_then(propagation_flags) {
            sys.mount(None, target, None, flags, None)
                .map_err(at("cannot set the propagation of", target))?;
        }
    }
    Ok(())
}

/// A mount flag's propagation change (`mount(2)` flags), if it is one.
fn propagation_flags(flag: crate::mounts::MountFlag) -> Option<MsFlags> {
    use crate::mounts::MountFlag;
    let (kind, recursive) = match flag {
        MountFlag::Private { recursive } => (MsFlags::MS_PRIVATE, recursive),
        MountFlag::Slave { recursive } => (MsFlags::MS_SLAVE, recursive),
        MountFlag::Unbindable { recursive } => (MsFlags::MS_UNBINDABLE, recursive),
        _ => return None,
    };
    Some(match recursive {
        true => kind | MsFlags::MS_REC,
        false => kind,
    })
}

/// `--read-only`: the root mount (this mount namespace's copy of it) made
/// read-only, with a fresh tmpfs at /tmp for what programs must write.
pub(crate) fn make_root_read_only(sys: &dyn Syscall) -> Result<(), RootfsError> {
    let (slash, tmp) = (Path::new("/"), Path::new("/tmp"));
    sys.mkdir_all(tmp, 0o1777)
        .map_err(at("cannot create", tmp))?;
    sys.mount(
        None,
        slash,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None,
    )
    .map_err(at("cannot make read-only", slash))?;
    sys.mount(
        Some(Path::new("tmpfs")),
        tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(at("cannot mount", tmp))
}

/// Mounts the user's new tmpfs mounts (after pivot_root), each owned by
/// the container's identity (the user's options, e.g. `mode=`, after
/// berth's), nosuid and nodev.
pub(crate) fn mount_tmpfs(
    sys: &dyn Syscall,
    mounts: &[crate::spec::TmpfsMount],
    identity: &crate::spec::Identity,
) -> Result<(), RootfsError> {
    for m in mounts {
        let target = &m.destination;
        sys.make_user_path(target, user_paths::Kind::Dir, identity)
            .map_err(at("cannot create mount point", target))?;
        // Ids as the namespace doing the mount sees them: rootless berth's
        // maps the caller to 0.
        let (uid, gid) = match identity.privileged {
            true => (identity.host_uid, identity.host_gid),
            false => (0, 0),
        };
        let mut options = vec![
            format!("uid={uid}"),
            format!("gid={gid}"),
            "mode=755".to_string(),
        ];
        options.extend(m.options.iter().cloned());
        sys.mount(
            Some(Path::new("tmpfs")),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&options.join(",")),
        )
        .map_err(at("cannot mount a tmpfs on", target))?;
    }
    Ok(())
}

/// The host's ldconfig (glibc builds it static): Ubuntu's real one behind
/// its wrapper script, else /sbin/ldconfig.
fn host_ldconfig() -> std::path::PathBuf {
    [
        "/sbin/ldconfig.real",
        "/sbin/ldconfig",
        "/usr/sbin/ldconfig",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| "/sbin/ldconfig".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BindMount, Identity, ProcessSpec, TmpfsMount};
    use crate::syscall::RecordingSyscall;
    use std::path::PathBuf;

    fn spec(read_only: bool) -> ContainerSpec {
        ContainerSpec {
            layers: vec![PathBuf::from("/store/l1"), PathBuf::from("/store/l2")],
            image_tree: None,
            mount_point: PathBuf::from("/store/mnt"),
            upper_size: "50%".into(),
            disk_layer: None,
            read_only,
            hostname: "box".into(),
            own_network: false,
            mounts: vec![BindMount {
                source: PathBuf::from("/data"),
                destination: PathBuf::from("/mnt/data"),
                read_only: true,
                no_exec: false,
                propagation: None,
                tree: None,
            }],
            tmpfs_mounts: vec![TmpfsMount {
                destination: PathBuf::from("/scratch"),
                options: vec!["size=1m".into()],
            }],
            identity: Identity::job_user(1000),
            process: ProcessSpec {
                args: vec!["true".into()],
                env: vec![],
                cwd: PathBuf::from("/work"),
            },
            root_capabilities: vec![],
            console: None,
            terminal: None,
            proc_hidepid: false,
            seccomp_program: None,
            devices: Default::default(),
            cgroup: None,
            slurm_tasks: None,
            owned_layers: None,
        }
    }

    fn record(spec: &ContainerSpec) -> Vec<String> {
        let sys = RecordingSyscall::default();
        prepare(&sys, spec, &|p: &Path| {
            Some(p.starts_with("/data") || p.extension().is_none() && !p.ends_with("kcore"))
        })
        .unwrap();
        sys.calls()
    }

    fn position(calls: &[String], prefix: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
    }

    #[test]
    fn mounts_are_private_first_and_host_sources_open_before_pivot() {
        let calls = record(&spec(false));
        assert!(
            calls[0].starts_with("mount - / - MsFlags(MS_REC | MS_PRIVATE)"),
            "{}",
            calls[0]
        );
        let pivot = position(&calls, "pivot_root");
        assert!(position(&calls, "mount overlay /store/mnt/root overlay") < pivot);
        assert!(position(&calls, "clone_tree -r /data") < pivot);
        assert!(position(&calls, "clone_tree /dev/null") < pivot);
        assert!(position(&calls, "mount proc /store/mnt/root/proc proc") < pivot);
        assert!(position(&calls, "mount tmpfs /dev tmpfs") > pivot);
        // The user's mount is bound from the descriptor, then made read-only.
        let bind = calls
            .iter()
            .position(|c| c.starts_with("attach ") && c.ends_with(" /mnt/data"))
            .expect("the user's mount is attached");
        assert!(position(&calls, "readonly /mnt/data") > bind);
        assert!(calls.contains(&"sethostname box".to_string()));
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("mount /dev/null /proc/kcore")),
            "{calls:#?}"
        );
    }

    #[test]
    fn overlay_uses_userxattr_only_rootless() {
        let calls = record(&spec(false));
        assert!(!calls.iter().any(|c| c.contains("userxattr")));
        let mut rootless = spec(false);
        rootless.identity.privileged = false;
        let calls = record(&rootless);
        assert!(calls
            .iter()
            .any(|c| c.contains("lowerdir=l2:l1") && c.ends_with(",userxattr")));
        assert!(calls.contains(&"chdir /store".to_string()), "{calls:#?}");
    }

    #[test]
    fn owned_layers_come_from_the_idmapped_copy_and_the_root_is_the_identitys() {
        let mut owned = spec(false);
        let tree = std::fs::File::open("/dev/null").unwrap();
        owned.owned_layers = Some(crate::spec::OwnedLayers {
            owner: (1000, 1000),
            dir: PathBuf::from("/store"),
            tree: std::sync::Arc::new(tree.into()),
        });
        let calls = record(&owned);
        let give = position(&calls, "give 1000:1000 /store/mnt/upper");
        let attach = calls
            .iter()
            .position(|c| c.starts_with("attach ") && c.ends_with(" /store/mnt/owned"))
            .unwrap_or_else(|| panic!("{calls:#?}"));
        let overlay = position(&calls, "mount overlay /store/mnt/root overlay");
        assert!(give < overlay && attach < overlay);
        assert!(
            calls[overlay].contains("lowerdir=l2:l1,")
                && calls.contains(&"chdir /store/mnt/owned".into()),
            "{calls:#?}"
        );
        // A layer from elsewhere is refused, not taken unmapped.
        owned.layers.push(PathBuf::from("/elsewhere/l3"));
        let sys = RecordingSyscall::default();
        let e = prepare(&sys, &owned, &|_: &Path| Some(true)).unwrap_err();
        assert!(e.to_string().contains("/store"), "{e}");
    }

    #[test]
    fn apt_is_told_to_stay_root_in_the_images_files_unless_the_identity_is_real_root() {
        let calls_for = |spec: &ContainerSpec| {
            let sys = RecordingSyscall::default();
            let is_dir = |p: &Path| Some(p == Path::new(APT_CONF_DIR) || p.extension().is_none());
            prepare(&sys, spec, &is_dir).unwrap();
            sys.calls()
        };
        let tree = std::fs::File::open("/dev/null").unwrap();
        let owned = |mut spec: ContainerSpec| {
            spec.owned_layers = Some(crate::spec::OwnedLayers {
                owner: (1000, 1000),
                dir: PathBuf::from("/store"),
                tree: std::sync::Arc::new(tree.try_clone().unwrap().into()),
            });
            spec
        };
        let calls = calls_for(&owned(spec(false)));
        let write = position(
            &calls,
            "write_new_file /etc/apt/apt.conf.d/zz-berth-apt-stays-root as 1000",
        );
        // After the pivot (the image's symlinks lead inside it), before the
        // user's mounts (only the container's own files).
        assert!(write > position(&calls, "pivot_root"));
        let user_mount = calls
            .iter()
            .position(|c| c.starts_with("attach ") && c.ends_with(" /mnt/data"))
            .unwrap();
        assert!(write < user_mount, "{calls:#?}");
        let mut root = spec(false);
        (root.identity.host_uid, root.identity.host_gid) = (0, 0);
        let mut rootless = spec(false);
        rootless.identity.privileged = false;
        // Where the files stayed root's (no idmap), apt's directory is not
        // the identity's: nothing is written (and the start goes on).
        let fallback = spec(false);
        for (spec, written) in [
            (root, false),
            (rootless, true),
            (owned(spec(true)), false),
            (fallback, false),
        ] {
            let calls = calls_for(&spec);
            let wrote = calls.iter().any(|c| c.starts_with("write_new_file"));
            assert_eq!(wrote, written, "{calls:#?}");
        }
    }

    #[test]
    fn read_only_root_gets_tmpfs_tmp_after_remount() {
        let calls = record(&spec(true));
        let remount = position(
            &calls,
            "mount - / - MsFlags(MS_RDONLY | MS_REMOUNT | MS_BIND)",
        );
        assert!(position(&calls, "mount tmpfs /tmp tmpfs") > remount);
        assert!(position(&calls, "mkdir /work") < remount);
        let calls = record(&spec(false));
        assert!(!calls.iter().any(|c| c.contains("MS_REMOUNT")));
    }
}
