//! [`ContainerSpec`]: the one value that fully describes a container, and
//! the one builder of it ([`build::build_spec`]) that `berth run`, a Slurm
//! step's `slurm-start` and a step's view into a named container
//! ([`build::step_view_spec`]) share. The command line only parses
//! arguments into a [`build::ContainerRequest`]; `process::run` and the
//! Slurm keeper act on the spec.
//!
//! - [`build`]: request + purpose → spec (image, identity, process, devices, cgroup)
//! - [`identity`]: who the container runs as
//! - [`mounts`]: the user's bind mounts, checked and opened with the user's rights
//! - [`process`]: the command, its environment and working directory
//! - [`devices`]: GPUs, CDI devices and the container's cgroup

pub mod build;
pub mod devices;
pub mod identity;
pub mod mounts;
pub mod process;

use std::path::PathBuf;

/// Why a container's spec could not be built: each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A value the user gave (option, image field) is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The image.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// The node's image store.
    #[error(transparent)]
    Store(#[from] crate::image::StoreError),
    /// A bind mount.
    #[error(transparent)]
    Mount(#[from] crate::mounts::MountError),
    /// A path opened with the user's rights.
    #[error(transparent)]
    UserPath(#[from] crate::as_user::UserPathError),
    /// The GPUs asked for.
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    /// The resource limits.
    #[error(transparent)]
    Limits(#[from] crate::limits::LimitsError),
    /// berth.toml's capabilities.
    #[error(transparent)]
    Caps(#[from] crate::caps::CapsError),
    /// The seccomp program.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// A host operation.
    #[error("{what}: {source}")]
    Host {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl SpecError {
    /// A host operation's failure, saying what was being done.
    pub fn host(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpecError {
        let what = what.into();
        move |source| SpecError::Host { what, source }
    }
}

/// Everything needed to start one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Image layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// A root filesystem directory image as a detached mount (taken from
    /// the descriptor the user's rights opened, never from its path): the
    /// top layer, attached inside the container's mount namespace.
    pub image_tree: Option<std::os::fd::RawFd>,
    /// The store's layers as the container identity's (when berth runs as
    /// root for another identity): `layers` are then named below this
    /// idmapped copy of their directory. None: as on disk.
    pub owned_layers: Option<OwnedLayers>,
    /// An empty directory to mount the container's tmpfs on, inside its own
    /// mount namespace (the host never sees the mount).
    pub mount_point: PathBuf,
    /// Size option of the tmpfs holding the writable layer ("50%", "4G").
    pub upper_size: String,
    /// A named container's writable layer on disk instead of the tmpfs: a
    /// detached mount of its filesystem (see `slurm::named`).
    pub disk_layer: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Root filesystem read-only, with a tmpfs /tmp.
    pub read_only: bool,
    /// Hostname in the container's UTS namespace.
    pub hostname: String,
    /// A network namespace of its own, with only a loopback (`--network
    /// none`, `--container-unshare=net`); else the host's network.
    pub own_network: bool,
    /// Host paths bound into the container.
    pub mounts: Vec<BindMount>,
    /// New tmpfs mounts the user asked for.
    pub tmpfs_mounts: Vec<TmpfsMount>,
    /// Who the command runs as, and how ids are mapped.
    pub identity: Identity,
    /// The command.
    pub process: ProcessSpec,
    /// Capabilities the command keeps when it runs as uid 0 in the container.
    pub root_capabilities: Vec<caps::Capability>,
    /// The container shares the host's pid namespace (a Slurm step's keeper):
    /// its /proc is mounted with `hidepid=invisible`, so users see only their
    /// own processes.
    pub proc_hidepid: bool,
    /// The host terminal to show as /dev/console: the container's own
    /// pseudo-terminal, when berth's stdin is a terminal.
    pub console: Option<PathBuf>,
    /// That pseudo-terminal's container end: the command's controlling
    /// terminal (and its stdio where berth's is a terminal).
    pub terminal: Option<std::os::fd::RawFd>,
    /// Compiled seccomp program (`sock_filter` array), or None to run unconfined.
    pub seccomp_program: Option<Vec<u8>>,
    /// GPUs and other host devices, with what their drivers need.
    pub devices: DeviceEdits,
    /// The cgroup berth makes for the container, or None to leave the
    /// container in berth's own cgroup.
    pub cgroup: Option<CgroupSpec>,
    /// For a Slurm step's container: what each task takes from the job
    /// rather than from the container (None for `berth run`).
    pub slurm_tasks: Option<SlurmTaskRules>,
}

/// What a Slurm task of the container takes from its job: Slurm starts
/// each task with the job's environment in the job's directory, and the
/// plugin applies these rules as it moves the task into the container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmTaskRules {
    /// Where each task starts (`--container-workdir`), or None: where Slurm
    /// starts it.
    pub workdir: Option<PathBuf>,
    /// Variables whose job value wins over the container's
    /// (`--container-env`), besides Slurm's, the GPUs' and MPI's own
    /// ([`process::job_owns`]).
    pub job_env: Vec<String>,
}

/// The directory holding an image's layers as a detached idmapped mount,
/// in which every file (root's on disk: the store drops the tars' owners)
/// shows as owned by `owner`. Made by the builder, in the host's pid
/// namespace; attached inside the container's mount namespace.
#[derive(Debug, Clone)]
pub struct OwnedLayers {
    /// Host uid and gid the files show as owned by.
    pub owner: (u32, u32),
    /// The directory that was cloned (every layer's parent).
    pub dir: PathBuf,
    /// The idmapped `open_tree` descriptor.
    pub tree: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl OwnedLayers {
    /// Clones `dir` as `owner`'s: a user namespace mapping 0 to `owner`,
    /// and an idmapped clone of the directory's mount (no copy of a file).
    pub fn of(dir: &std::path::Path, owner: (u32, u32)) -> std::io::Result<OwnedLayers> {
        use std::os::fd::AsFd;
        let userns = crate::sys::userns_mapping_root_to(owner.0, owner.1)?;
        let tree = crate::sys::open_tree_clone(dir, false)?;
        crate::sys::idmap_tree(tree.as_fd(), userns.as_fd())?;
        Ok(OwnedLayers {
            owner,
            dir: dir.to_path_buf(),
            tree: std::sync::Arc::new(tree),
        })
    }
}

/// A container's own cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupSpec {
    /// Path relative to the cgroup root.
    pub path: String,
    /// On cgroup v1: controllers whose cgroup goes elsewhere than `path`
    /// (a Slurm step's cgroups differ between hierarchies).
    pub v1_paths: std::collections::BTreeMap<String, String>,
    /// The limits written to it.
    pub limits: crate::limits::ResourceLimits,
    /// The devices anything in it may open, or None to leave device access
    /// to an outer cgroup (Slurm's, when it constrains devices).
    pub devices: Option<Vec<crate::limits::device_filter::DeviceRule>>,
}

/// Host devices a container gets beyond the minimal /dev (GPUs, CDI
/// devices), and what goes with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceEdits {
    /// Host device files bound into the container's /dev.
    pub nodes: Vec<DeviceNode>,
    /// Host paths (a driver's libraries and tools) bound before the user's
    /// mounts, so the library cache is built with them and without those.
    pub mounts: Vec<BindMount>,
    /// `KEY=VALUE` for the environment (already in `process.env`).
    pub env: Vec<String>,
    /// Library directories the container's ld.so cache is rebuilt with.
    pub ldcache_folders: Vec<PathBuf>,
    /// Symlinks to create: (target, link path in the container).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
}

impl DeviceEdits {
    /// Adds a node unless one is already at that container path.
    pub fn add_node(&mut self, node: DeviceNode) {
        if !self.nodes.iter().any(|n| n.path == node.path) {
            self.nodes.push(node);
        }
    }
}

/// A host device file and where it appears in the container.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceNode {
    /// On the host.
    pub host: PathBuf,
    /// In the container (under /dev).
    pub path: PathBuf,
}

/// A bind mount from the host.
#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    /// Host path (absolute, canonical).
    pub source: PathBuf,
    /// Path in the container (absolute).
    pub destination: PathBuf,
    /// Read-only.
    pub read_only: bool,
    /// Nothing on it may be executed (`noexec`).
    pub no_exec: bool,
    /// A propagation other than berth's private one (`slave`, `unbindable`...).
    pub propagation: Option<crate::mounts::MountFlag>,
    /// For root acting for a user: the source as a detached mount, cloned
    /// from what the user's rights opened (never from the path again), and
    /// whether it is a directory. None: cloned from `source` in the
    /// container's namespace (root for itself, rootless, the admin's CDI).
    pub tree: Option<SourceTree>,
}

/// A new tmpfs in the container (`tmpfs:DST[:OPTIONS]`), owned by the
/// container's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct TmpfsMount {
    /// Path in the container (absolute).
    pub destination: PathBuf,
    /// The user's tmpfs options (`size=`, `mode=`, `nr_inodes=`, `huge=`).
    pub options: Vec<String>,
}

/// A detached mount tree (made private) of a bind mount's source.
#[derive(Debug, Clone)]
pub struct SourceTree {
    /// The `open_tree` descriptor.
    pub fd: std::sync::Arc<std::os::fd::OwnedFd>,
    /// Whether the source is a directory.
    pub is_dir: bool,
}

impl PartialEq for SourceTree {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.fd, &other.fd)
    }
}

/// Identity of the container's processes.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The host uid whose rights the container has.
    pub host_uid: u32,
    /// The host gid.
    pub host_gid: u32,
    /// Supplementary host groups (mapped and kept when berth runs as root).
    pub host_groups: Vec<u32>,
    /// Show the user as root (uid 0) inside the container.
    pub remap_root: bool,
    /// berth itself runs as root (decides how namespaces are set up).
    pub privileged: bool,
}

impl Identity {
    /// Root acting for job user `uid` (gid the same, no other groups, not
    /// remapped): what the plugin's helpers build for.
    #[cfg(test)]
    pub(crate) fn job_user(uid: u32) -> Identity {
        Identity {
            host_uid: uid,
            host_gid: uid,
            host_groups: vec![],
            remap_root: false,
            privileged: true,
        }
    }

    /// The uid the command has inside the container.
    pub fn container_uid(&self) -> u32 {
        if self.remap_root {
            0
        } else {
            self.host_uid
        }
    }

    /// The gid the command has inside the container.
    pub fn container_gid(&self) -> u32 {
        if self.remap_root {
            0
        } else {
            self.host_gid
        }
    }
}

/// The command and its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the container's PATH when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE`, final (HOME is filled in from the image's passwd when absent).
    pub env: Vec<String>,
    /// Working directory (created when missing).
    pub cwd: PathBuf,
}

/// A Slurm step's own view into a named container that an earlier step
/// made: the container's root filesystem, ipc and uts namespaces, with this
/// step's devices in a fresh /dev, its mounts and its own cgroup (as pyxis
/// gives each step of a named container its own devices).
#[derive(Debug, Clone)]
pub struct StepViewSpec {
    /// This step's GPUs and other device nodes (CDI mounts and hooks came
    /// with the container: they are the node's, not a step's).
    pub devices: DeviceEdits,
    /// This step's bind mounts.
    pub mounts: Vec<BindMount>,
    /// This step's new tmpfs mounts.
    pub tmpfs_mounts: Vec<TmpfsMount>,
    /// What this step's tasks take from the job; a working directory given
    /// here is made when missing (the plugin gives none: its tasks enter
    /// theirs themselves).
    pub tasks: SlurmTaskRules,
    /// The job's user (the mount namespace belongs to the host's user
    /// namespace: `privileged`), remapped to root when this step asks.
    pub identity: Identity,
    /// This step's cgroup, or None.
    pub cgroup: Option<CgroupSpec>,
    /// This step sees the container's files read-only, with a /tmp of its
    /// own (`--container-readonly`); the container stays writable for
    /// its other steps.
    pub read_only: bool,
}
