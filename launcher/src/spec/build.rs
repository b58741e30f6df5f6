//! The one spec builder: what was asked ([`ContainerRequest`]) and what the
//! container is for ([`Purpose`]: `berth run`, or a Slurm step) become a
//! [`ContainerSpec`]: the image resolved and its layers held, the identity,
//! the user's mounts (opened with the user's rights), the process, the
//! devices and the cgroup.

use std::path::PathBuf;

use slurm_conf::Config;

use crate::image::store::LayersInUse;
use crate::image::{ImageRegistry, ImageSource, ResolvedImage, Store, StoreError};

use super::devices::{devices_and_cgroup, Asks};
use super::identity::{asked_identity, identity};
use super::mounts::user_mounts;
use super::process::{process_spec, ProcessAsk};
use super::{ContainerSpec, SlurmTaskRules, SpecError, StepViewSpec};

/// What every build needs from the node: its configuration, its image
/// store, and whether berth runs as root.
pub struct BuildContext<'a> {
    /// berth.toml.
    pub config: &'a Config,
    /// The node's image store.
    pub store: &'a Store,
    /// berth runs as root.
    pub privileged: bool,
}

/// Whose registry credentials a pull uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The caller's own (berth run by a user, or by root for itself), and
    /// the admin's configured files.
    Caller,
    /// Those of the user root acts for: (uid, gid), read with that user's
    /// rights (root pulling on a user's behalf must not let a symlink in
    /// their home expose root's files).
    User(u32, u32),
}

/// The registry side of a build: pulls with the credentials of whoever the
/// container is for (the caller shows progress its own way).
pub trait Registries {
    /// The registry as `whose` reaches it.
    fn for_user(&self, whose: Credentials) -> Box<dyn ImageRegistry + '_>;
}

/// What was asked for a container (`berth run`'s options, or what the
/// SPANK plugin passes for a step).
#[derive(Debug, Clone, Default)]
pub struct ContainerRequest {
    /// A registry reference, a name in the store, or a path.
    pub image: String,
    /// The command; empty: the image's Entrypoint and Cmd.
    pub command: Vec<String>,
    /// Bind mounts, `SRC:DST[:OPTIONS]`.
    pub mounts: Vec<String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// `K=V`, or `K` to copy from the caller's environment.
    pub env: Vec<String>,
    /// Hostname inside the container.
    pub hostname: Option<String>,
    /// Appear as root inside the container.
    pub remap_root: bool,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// No network but a loopback of the container's own.
    pub no_network: bool,
    /// GPUs asked for (`--gpus`).
    pub gpus: Option<String>,
    /// Resource limits asked for.
    pub limits: crate::limits::Asked,
    /// Root runs the container for this user: `UID[:GID]`.
    pub user: Option<String>,
}

/// What the container is for: how `berth run`'s and a Slurm step's differ.
#[derive(Debug, Default)]
pub struct Purpose {
    /// A command must be known (from the request or the image).
    pub needs_command: bool,
    /// Hostname when none is asked for.
    pub default_hostname: Option<String>,
    /// The container's /proc hides other users' processes.
    pub proc_hidepid: bool,
    /// The GPUs Slurm allocated (the policy in berth.toml does not apply).
    pub slurm_gpus: Option<SlurmGpus>,
    /// The container's own cgroup (relative to the cgroup root), or None.
    pub cgroup_path: Option<String>,
    /// On cgroup v1, controllers whose cgroup goes elsewhere (Slurm's step
    /// cgroups differ between hierarchies).
    pub cgroup_v1_paths: std::collections::BTreeMap<String, String>,
    /// The Slurm partition, for `[limits.partitions.NAME]`.
    pub partition: Option<String>,
    /// Slurm confines the step's devices itself (cgroup.conf
    /// ConstrainDevices): berth's filter would only repeat it.
    pub slurm_constrains_devices: bool,
    /// The container's own terminal (its end and host path), when berth's
    /// stdin is a terminal.
    pub terminal: Option<(std::os::fd::RawFd, PathBuf)>,
    /// The caller's TERM, passed on when its output is a terminal.
    pub term: Option<String>,
    /// For a Slurm step: the variables whose job value wins
    /// (`--container-env`); None for `berth run`.
    pub slurm_job_env: Option<Vec<String>>,
    /// Slurm's own mounts for the step (`SRC:DST[:FLAGS]`: the batch
    /// script, the PMIx server's directory): see `mounts::slurm_mounts`.
    pub slurm_mounts: Vec<String>,
}

/// The user's mounts and then Slurm's own for the step.
fn step_mounts(
    config: &slurm_conf::Config,
    request: &ContainerRequest,
    purpose: &Purpose,
    identity: &super::Identity,
) -> Result<super::mounts::UserMounts, SpecError> {
    let mut mounts = user_mounts(config, &request.mounts, identity)?;
    let slurms = super::mounts::slurm_mounts(config, &purpose.slurm_mounts, identity)?;
    mounts.binds.extend(slurms.binds);
    Ok(mounts)
}

/// A Slurm step's GPUs and how to find their device files.
#[derive(Debug)]
pub struct SlurmGpus {
    /// Global GPU indexes (`SLURM_STEP_GPUS`).
    pub indexes: Vec<u32>,
    /// The cluster's gres.conf.
    pub gres_conf: PathBuf,
    /// This node's name in Slurm.
    pub node: String,
}

/// A built spec with its image and the hold on the image's layers (which
/// `berth gc` leaves alone while it is kept).
pub struct Built {
    /// The container.
    pub spec: ContainerSpec,
    /// Its image.
    pub image: ResolvedImage,
    /// The hold on the layers.
    pub in_use: LayersInUse,
}

/// Resolves the image, holds its layers, and builds the spec.
pub fn build_spec(
    ctx: &BuildContext,
    registries: &dyn Registries,
    request: &ContainerRequest,
    purpose: &Purpose,
) -> Result<Built, SpecError> {
    let (config, store, privileged) = (ctx.config, ctx.store, ctx.privileged);
    // Root acting for a user (--user: berth run, or the Slurm plugin): the
    // identity is resolved once, the pull uses that user's own registry
    // credentials, and an image path is opened once with the user's rights
    // (only that descriptor is read afterwards).
    let asked = asked_identity(request.user.as_deref(), request.remap_root, privileged)?;
    let whose = asked.as_ref().map_or(Credentials::Caller, |id| {
        Credentials::User(id.host_uid, id.host_gid)
    });
    let rights = asked.as_ref().map(|id| crate::as_user::UserRights {
        uid: id.host_uid,
        gid: id.host_gid,
        groups: id.host_groups.clone(),
    });
    let source = ImageSource::parse(&request.image, rights.as_ref())?;
    let registry = registries.for_user(whose);
    let resolve = || source.resolve(store, config.security.allow_setuid, &*registry);
    let mut image = resolve()?;
    let in_use = match store.hold_layers(&image.layer_digests) {
        Ok(held) => held,
        // `berth gc` removed a layer between the lookup and the hold.
        Err(StoreError::LayerGone(_)) => {
            image = resolve()?;
            store.hold_layers(&image.layer_digests)?
        }
        Err(e) => return Err(e.into()),
    };
    build_resolved(ctx, request, purpose, asked, image, in_use)
}

/// Builds the spec of a container of `image`, already resolved (a named
/// container's recorded image: the same layers every time), its layers
/// held; `request.image` is not looked at.
pub fn build_spec_for_image(
    ctx: &BuildContext,
    request: &ContainerRequest,
    purpose: &Purpose,
    image: ResolvedImage,
) -> Result<Built, SpecError> {
    let asked = asked_identity(request.user.as_deref(), request.remap_root, ctx.privileged)?;
    let in_use = ctx.store.hold_layers(&image.layer_digests)?;
    build_resolved(ctx, request, purpose, asked, image, in_use)
}

/// The rest of a build, once the image is resolved and held.
fn build_resolved(
    ctx: &BuildContext,
    request: &ContainerRequest,
    purpose: &Purpose,
    asked: Option<super::Identity>,
    image: ResolvedImage,
    in_use: LayersInUse,
) -> Result<Built, SpecError> {
    let (config, store, privileged) = (ctx.config, ctx.store, ctx.privileged);
    let identity = match asked {
        Some(id) => id,
        None => identity(&image, request.remap_root, privileged)?,
    };
    let mounts = step_mounts(config, request, purpose, &identity)?;
    let hostname = request
        .hostname
        .clone()
        .or_else(|| purpose.default_hostname.clone())
        .unwrap_or_else(|| config.container.hostname.clone());
    slurm_conf::validate_hostname(&hostname)
        .map_err(|m| SpecError::Invalid(format!("--hostname: {m}")))?;
    let ask = ProcessAsk {
        command: &request.command,
        env: &request.env,
        workdir: request.workdir.as_deref(),
        term: purpose.term.clone(),
    };
    let mut process = process_spec(&ask, &image.config, purpose.needs_command, |k| {
        std::env::var(k).ok()
    })?;
    let console = purpose.terminal.as_ref().map(|(_, path)| path.clone());
    let asks = Asks {
        gpus: request.gpus.as_deref(),
        limits: request.limits.clone(),
        root_for_itself: privileged && request.user.is_none(),
    };
    let (devices, cgroup) = devices_and_cgroup(ctx, &identity, &asks, purpose, console.as_deref())?;
    for entry in &devices.env {
        super::process::set_env(&mut process.env, entry);
    }
    let root_capabilities = crate::caps::parse_names(config.remap_root_capabilities())?;
    let seccomp_program = match config.security.seccomp {
        true => Some(crate::seccomp::default_program(&store.seccomp_dir())?),
        false => None,
    };
    let slurm_tasks = purpose
        .slurm_job_env
        .as_ref()
        .map(|job_env| SlurmTaskRules {
            workdir: request.workdir.as_ref().map(PathBuf::from),
            job_env: job_env.clone(),
        });
    let owned_layers = owned_layers(&identity, &image)?;
    let spec = ContainerSpec {
        layers: image.layers.clone(),
        owned_layers,
        image_tree: image
            .image_tree
            .as_ref()
            .map(|tree| std::os::fd::AsRawFd::as_raw_fd(&**tree)),
        mount_point: store.mount_point(),
        upper_size: config.container.upper_size.clone(),
        disk_layer: None,
        read_only: request.read_only,
        hostname,
        own_network: request.no_network,
        mounts: mounts.binds,
        tmpfs_mounts: mounts.tmpfs,
        identity,
        process,
        root_capabilities,
        console,
        terminal: purpose.terminal.as_ref().map(|(fd, _)| *fd),
        proc_hidepid: purpose.proc_hidepid,
        seccomp_program,
        devices,
        cgroup,
        slurm_tasks,
    };
    Ok(Built {
        spec,
        image,
        in_use,
    })
}

/// The image's files are the container identity's, as with enroot: root's
/// on disk in the store, shown as the identity's through an idmapped mount
/// of the store's layer directory (rootless berth's store is the caller's
/// already; root for itself sees them as they are).
fn owned_layers(
    identity: &super::Identity,
    image: &ResolvedImage,
) -> Result<Option<super::OwnedLayers>, SpecError> {
    let owner = (identity.host_uid, identity.host_gid);
    if !identity.privileged || owner == (0, 0) || image.layer_digests.is_empty() {
        return Ok(None);
    }
    let Some(dir) = image.layers.first().and_then(|l| l.parent()) else {
        return Ok(None);
    };
    if image.layers.iter().any(|l| l.parent() != Some(dir)) {
        return Err(SpecError::Invalid(format!(
            "the image's layers are not all in {}",
            dir.display()
        )));
    }
    // Where the store's filesystem cannot be idmapped (tmpfs before Linux
    // 6.3, NFS) or user namespaces are off, the files keep their owners
    // (root's: readable, not writable): the container still runs.
    match super::OwnedLayers::of(dir, owner) {
        Ok(owned) => Ok(Some(owned)),
        Err(e) => {
            tracing::warn!(
                "the image's files stay root's in this container: {} cannot be idmapped ({e})",
                dir.display()
            );
            Ok(None)
        }
    }
}

/// A Slurm step's own view into a named container an earlier step made:
/// this step's user (remapped when it asks), mounts, devices, cgroup and
/// task rules; the files are the container's.
pub fn step_view_spec(
    ctx: &BuildContext,
    user: &str,
    request: &ContainerRequest,
    purpose: &Purpose,
) -> Result<StepViewSpec, SpecError> {
    let identity = super::identity::user_identity(user, request.remap_root)?;
    let mounts = step_mounts(ctx.config, request, purpose, &identity)?;
    let asks = Asks {
        gpus: None,
        limits: Default::default(),
        root_for_itself: false,
    };
    let (devices, cgroup) = devices_and_cgroup(ctx, &identity, &asks, purpose, None)?;
    let workdir = request.workdir.as_ref().map(PathBuf::from);
    if let Some(dir) = workdir.as_ref().filter(|d| !d.is_absolute()) {
        return Err(SpecError::Invalid(format!(
            "--workdir {}: must be an absolute path",
            dir.display()
        )));
    }
    Ok(StepViewSpec {
        devices,
        mounts: mounts.binds,
        tmpfs_mounts: mounts.tmpfs,
        tasks: SlurmTaskRules {
            workdir,
            job_env: purpose.slurm_job_env.clone().unwrap_or_default(),
        },
        identity,
        cgroup,
        read_only: request.read_only,
    })
}
