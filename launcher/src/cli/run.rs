//! `berth run`: turns options, config and image into a ContainerSpec and
//! hands it to `berth::process::run`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use berth::image::{ImageSource, ResolvedImage};
use berth::process;
use berth::spec::{ContainerSpec, Identity, ProcessSpec};

use super::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// Bind a host path: SRC:DST[:ro|rw] (repeatable).
    #[arg(short, long = "mount", value_name = "SRC:DST[:ro]")]
    mounts: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Set an environment variable: K=V, or K to copy it from berth's environment (repeatable).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Hostname inside the container.
    #[arg(long)]
    hostname: Option<String>,
    /// Appear as root inside the container (still your own user outside).
    #[arg(long)]
    remap_root: bool,
    /// Read-only root filesystem, with a tmpfs /tmp.
    #[arg(long)]
    read_only: bool,
    /// GPUs to give the container: indexes like 0,1 or "all" (those berth.toml's
    /// [gpus] grants you; root may take any).
    #[arg(long, value_name = "LIST")]
    gpus: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Run as this user (UID[:GID]); only root may ask.
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// The image: a registry reference, a name in the store, an OCI layout, a
    /// docker-archive tar, a squashfs file or a root filesystem directory.
    image: String,
    /// The command and its arguments [default: the image's Entrypoint and Cmd].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Resource limits asked for (within berth.toml's `[limits]` maxima).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct LimitArgs {
    /// Memory limit (memory.max), e.g. 4G.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Swap limit (memory.swap.max), e.g. 0 or 1G.
    #[arg(long, value_name = "SIZE")]
    swap: Option<String>,
    /// CPU time limit in CPUs (cpu.max), e.g. 1.5.
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Most processes and threads at once (pids.max).
    #[arg(long = "pids-limit", value_name = "N")]
    pids: Option<u64>,
    /// Read bytes per second on the configured devices (io.max), e.g. 100M.
    #[arg(long, value_name = "SIZE")]
    io_read_bps: Option<String>,
    /// Write bytes per second on the configured devices (io.max).
    #[arg(long, value_name = "SIZE")]
    io_write_bps: Option<String>,
    /// Read operations per second on the configured devices (io.max).
    #[arg(long, value_name = "N")]
    io_read_iops: Option<u64>,
    /// Write operations per second on the configured devices (io.max).
    #[arg(long, value_name = "N")]
    io_write_iops: Option<u64>,
}

impl LimitArgs {
    fn asked(&self) -> berth::limits::Asked {
        berth::limits::Asked {
            memory: self.memory.clone(),
            swap: self.swap.clone(),
            cpus: self.cpus,
            pids: self.pids,
            io_read_bps: self.io_read_bps.clone(),
            io_write_bps: self.io_write_bps.clone(),
            io_read_iops: self.io_read_iops,
            io_write_iops: self.io_write_iops,
            io_devices: None,
        }
    }
}

impl RunArgs {
    /// Whether no `--user` was given.
    pub(crate) fn user_is_unset(&self) -> bool {
        self.user.is_none()
    }
}

/// What `run` and `slurm-start` differ in.
pub(crate) struct Purpose {
    /// A command must be known (from the arguments or the image).
    pub(crate) needs_command: bool,
    /// Hostname when none is asked for.
    pub(crate) default_hostname: Option<String>,
    /// The container shares the host's pid namespace.
    pub(crate) proc_hidepid: bool,
    /// The GPUs Slurm allocated (the policy in berth.toml does not apply).
    pub(crate) slurm_gpus: Option<SlurmGpus>,
    /// The container's own cgroup (relative to the cgroup root), or None.
    pub(crate) cgroup_path: Option<String>,
    /// On cgroup v1, controllers whose cgroup goes elsewhere (Slurm's step
    /// cgroups differ between hierarchies).
    pub(crate) cgroup_v1_paths: std::collections::BTreeMap<String, String>,
    /// The Slurm partition, for `[limits.partitions.NAME]`.
    pub(crate) partition: Option<String>,
    /// Slurm confines the step's devices itself (cgroup.conf
    /// ConstrainDevices): berth's filter would only repeat it.
    pub(crate) slurm_constrains_devices: bool,
    /// The container's own terminal (its end and host path), when berth's
    /// stdin is a terminal.
    pub(crate) terminal: Option<(std::os::fd::RawFd, PathBuf)>,
}

/// A Slurm step's GPUs and how to find their device files.
pub(crate) struct SlurmGpus {
    /// Global GPU indexes (`SLURM_STEP_GPUS`).
    pub(crate) indexes: Vec<u32>,
    /// The cluster's gres.conf.
    pub(crate) gres_conf: PathBuf,
    /// This node's name in Slurm.
    pub(crate) node: String,
}

/// Resolves the image, holds its layers, and builds the ContainerSpec.
pub(crate) fn build_spec(
    ctx: &Context,
    args: &RunArgs,
    purpose: &Purpose,
) -> Result<(
    ContainerSpec,
    ResolvedImage,
    berth::image::store::LayersInUse,
)> {
    let (config, store, privileged) = (&ctx.config, &ctx.store, ctx.privileged);
    // Root acting for a user (--user: berth run, or the Slurm plugin): the
    // identity is resolved once, the pull uses that user's own registry
    // credentials, and an image path is opened once with the user's rights
    // (only that descriptor is read afterwards).
    let asked = asked_identity(args, privileged)?;
    let whose = asked
        .as_ref()
        .map_or(super::images::Credentials::Caller, |id| {
            super::images::Credentials::User(id.host_uid, id.host_gid)
        });
    let rights = asked.as_ref().map(|id| berth::as_user::UserRights {
        uid: id.host_uid,
        gid: id.host_gid,
        groups: id.host_groups.clone(),
    });
    let source = ImageSource::parse(&args.image, rights.as_ref())?;
    let mut image = super::images::resolve(ctx, &source, whose)?;
    // Held until berth exits: `berth gc` leaves these layers alone meanwhile.
    let in_use = match store.hold_layers(&image.layer_digests) {
        Ok(held) => held,
        Err(berth::image::StoreError::LayerGone(_)) => {
            image = super::images::resolve(ctx, &source, whose)?;
            store.hold_layers(&image.layer_digests)?
        }
        Err(e) => return Err(e.into()),
    };
    let identity = match asked {
        Some(id) => id,
        None => identity(args, &image, privileged)?,
    };
    let mounts = user_mounts(config, &args.mounts, &identity)?;
    let hostname = args
        .hostname
        .clone()
        .or_else(|| purpose.default_hostname.clone())
        .unwrap_or_else(|| config.container.hostname.clone());
    slurm_conf::validate_hostname(&hostname).map_err(|m| anyhow::anyhow!("--hostname: {m}"))?;
    let mut process = process_spec(args, &image, purpose.needs_command)?;
    let console = purpose.terminal.as_ref().map(|(_, path)| path.clone());
    let asks = Asks {
        gpus: args.gpus.as_deref(),
        limits: args.limits.asked(),
        root_for_itself: privileged && args.user.is_none(),
    };
    let (devices, cgroup) = devices_and_cgroup(ctx, &identity, &asks, purpose, console.as_deref())?;
    for entry in &devices.env {
        let key = entry.split('=').next().unwrap_or_default();
        process.env.retain(|e| e.split('=').next() != Some(key));
        process.env.push(entry.clone());
    }
    let root_capabilities = berth::caps::parse_names(config.remap_root_capabilities())?;
    let seccomp_program = if config.security.seccomp {
        Some(berth::seccomp::default_program(&store.seccomp_dir())?)
    } else {
        None
    };
    let spec = ContainerSpec {
        layers: image.layers.clone(),
        image_tree: image
            .image_tree
            .as_ref()
            .map(|tree| std::os::fd::AsRawFd::as_raw_fd(&**tree)),
        mount_point: store.mount_point(),
        upper_size: config.container.upper_size.clone(),
        read_only: args.read_only,
        hostname,
        mounts,
        identity,
        process,
        root_capabilities,
        console,
        terminal: purpose.terminal.as_ref().map(|(fd, _)| *fd),
        proc_hidepid: purpose.proc_hidepid,
        seccomp_program,
        devices,
        cgroup,
    };
    Ok((spec, image, in_use))
}

/// The host paths `texts` (`SRC:DST[:OPTIONS]`) ask to bind, checked
/// against berth.toml's mount policy and readable by the container's user.
pub(crate) fn user_mounts(
    config: &slurm_conf::Config,
    texts: &[String],
    identity: &Identity,
) -> Result<Vec<berth::spec::BindMount>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // Root acting for a user resolves the path with the user's rights and
    // takes the source from what those rights open: a detached clone made
    // now, never the path again.
    let rights =
        (identity.privileged && identity.host_uid != 0).then(|| berth::as_user::UserRights {
            uid: identity.host_uid,
            gid: identity.host_gid,
            groups: identity.host_groups.clone(),
        });
    let mut mounts = Vec::new();
    for text in texts {
        let mut mount = match &rights {
            Some(user) => user.with(|| berth::mounts::parse_mount(text, &cwd))??,
            None => berth::mounts::parse_mount(text, &cwd)?,
        };
        berth::mounts::check_policy(&mount, &config.mounts)?;
        match &rights {
            Some(user) => {
                let (tree, opened_at) = source_tree(&mount.source, user)?;
                // The policy holds for what was opened, wherever the path
                // led by then (a component swapped after the first check).
                mount.source = opened_at;
                berth::mounts::check_policy(&mount, &config.mounts)?;
                mount.tree = Some(tree);
            }
            None => check_user_can_read(&mount.source, identity)?,
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

/// A mount source opened with the user's rights, as a private detached
/// tree, and where the opened object is.
fn source_tree(
    source: &Path,
    user: &berth::as_user::UserRights,
) -> Result<(berth::spec::SourceTree, PathBuf)> {
    use std::os::fd::AsFd;
    // Opened for reading (not O_PATH): the user must be able to read it.
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let opened =
        berth::as_user::open_user_path(Some(user), source, flags).map_err(|e| match e {
            berth::as_user::UserPathError::NotAccessible { .. } => {
                anyhow::Error::from(berth::mounts::MountError::PermissionDenied {
                    path: source.to_path_buf(),
                    uid: user.uid,
                })
            }
            other => other.into(),
        })?;
    let is_dir = match berth::as_user::file_kind(opened.as_fd())? {
        berth::as_user::FileKind::Dir => true,
        berth::as_user::FileKind::File => false,
        berth::as_user::FileKind::Other(what) => bail!(
            "mount source {} is {what}: only files and directories may be mounted",
            source.display()
        ),
    };
    let opened_at = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&opened)
    ))
    .with_context(|| format!("cannot tell where mount source {} is", source.display()))?;
    let tree = berth::sys::open_tree_clone_fd(opened.as_fd(), true)
        .with_context(|| format!("cannot clone mount source {}", source.display()))?;
    berth::sys::make_tree_private(tree.as_fd())
        .with_context(|| format!("cannot make mount source {} private", source.display()))?;
    Ok((
        berth::spec::SourceTree {
            fd: std::sync::Arc::new(tree),
            is_dir,
        },
        opened_at,
    ))
}

/// What the user asked for beyond the image: GPUs (`--gpus`) and limits.
pub(crate) struct Asks<'a> {
    pub(crate) gpus: Option<&'a str>,
    pub(crate) limits: berth::limits::Asked,
    /// Root runs a container for itself (no `--user`): the GPU policy lets it
    /// take any GPU.
    pub(crate) root_for_itself: bool,
}

/// The container's devices (GPUs, CDI) and its own cgroup, if it needs one.
pub(crate) fn devices_and_cgroup(
    ctx: &Context,
    identity: &Identity,
    asked: &Asks,
    purpose: &Purpose,
    console: Option<&Path>,
) -> Result<(berth::spec::DeviceEdits, Option<berth::spec::CgroupSpec>)> {
    // The name service (maybe LDAP) is asked for the user's and groups'
    // names only when a GPU policy or a per-user/group limit needs them.
    let names = LazyNames {
        identity,
        privileged: ctx.privileged,
        names: std::cell::OnceCell::new(),
    };
    let devices = gpu_devices(ctx, asked, purpose, &names)?;
    let cgroup = cgroup_spec(ctx, &asked.limits, purpose, &names, &devices, console)?;
    Ok((devices, cgroup))
}

/// The user's name and group names, for berth.toml's per-user and
/// per-group GPU grants and limits.
struct AccountNames {
    user: String,
    groups: Vec<String>,
}

/// [`AccountNames`] looked up on first use.
struct LazyNames<'a> {
    identity: &'a Identity,
    privileged: bool,
    names: std::cell::OnceCell<AccountNames>,
}

impl LazyNames<'_> {
    fn get(&self) -> &AccountNames {
        self.names
            .get_or_init(|| account_names(self.identity, self.privileged))
    }
}

fn account_names(identity: &Identity, privileged: bool) -> AccountNames {
    let user = nix::unistd::User::from_uid(identity.host_uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| identity.host_uid.to_string());
    let mut gids = vec![identity.host_gid];
    gids.extend(&identity.host_groups);
    if !privileged {
        gids.extend(
            nix::unistd::getgroups()
                .unwrap_or_default()
                .iter()
                .map(|g| g.as_raw()),
        );
    }
    gids.sort_unstable();
    gids.dedup();
    let groups = gids
        .iter()
        .filter_map(|g| nix::unistd::Group::from_gid((*g).into()).ok().flatten())
        .map(|g| g.name)
        .collect();
    AccountNames { user, groups }
}

/// The container's own cgroup, with the limits of berth.toml and the
/// user's asks and a device filter allowing only the container's devices.
/// Unprivileged berth cannot make cgroups: asking for limits is then an
/// error.
fn cgroup_spec(
    ctx: &Context,
    asked: &berth::limits::Asked,
    purpose: &Purpose,
    names: &LazyNames,
    devices: &berth::spec::DeviceEdits,
    console: Option<&Path>,
) -> Result<Option<berth::spec::CgroupSpec>> {
    use berth::limits::{self, device_filter};
    let Some(path) = purpose.cgroup_path.clone().filter(|_| ctx.privileged) else {
        if limits::asked_any(asked) {
            bail!("resource limits (--memory, --cpus, ...) need berth to run as root");
        }
        return Ok(None);
    };
    let config = &ctx.config.limits;
    let names_matter =
        !config.users.is_empty() || !config.groups.is_empty() || limits::asked_any(asked);
    let unnamed = AccountNames {
        user: String::new(),
        groups: vec![],
    };
    let names = if names_matter { names.get() } else { &unnamed };
    let who = limits::Who {
        user: &names.user,
        groups: &names.groups,
        partition: purpose.partition.as_deref(),
    };
    let resolved = limits::resolve(config, &who, asked)?;
    // Moving a process into a cgroup costs milliseconds (the migration
    // waits for an RCU grace period; on v1 once per hierarchy), for every
    // task of a Slurm step: berth makes a cgroup only when it limits
    // something, or when the container holds GPU/CDI device nodes whose
    // siblings must stay out of reach (and Slurm does not confine devices
    // itself). The minimal /dev and the mount policy need no filter; once a
    // v2 cgroup exists the filter costs nothing and is always attached.
    let under_slurm = purpose.slurm_gpus.is_some();
    let slurm_confines_devices = under_slurm && purpose.slurm_constrains_devices;
    let needs_filter = !devices.nodes.is_empty() && !slurm_confines_devices;
    if resolved.is_empty() && !needs_filter {
        return Ok(None);
    }
    let filter_devices = needs_filter || limits::cgroup::is_v2();
    let mut rules = device_filter::base_rules();
    for host in devices
        .nodes
        .iter()
        .map(|n| n.host.as_path())
        .chain(console)
    {
        rules.push(
            device_filter::rule_for(host).with_context(|| format!("device {}", host.display()))?,
        );
    }
    Ok(Some(berth::spec::CgroupSpec {
        path,
        v1_paths: purpose.cgroup_v1_paths.clone(),
        limits: resolved,
        devices: filter_devices.then_some(rules),
    }))
}

/// The GPUs for this container: Slurm's allocation, or `--gpus` within the
/// policy of berth.toml's `[gpus]`.
fn gpu_devices(
    ctx: &Context,
    asked: &Asks,
    purpose: &Purpose,
    names: &LazyNames,
) -> Result<berth::spec::DeviceEdits> {
    use berth::gpu;
    let config = &ctx.config.gpus;
    if let Some(slurm) = &purpose.slurm_gpus {
        if slurm.indexes.is_empty() {
            return Ok(Default::default());
        }
        let (files, from) = gpu::device_files(config, &slurm.gres_conf, &slurm.node);
        return Ok(gpu::edits_for(&slurm.indexes, config, &files, &from)?);
    }
    let Some(list) = asked.gpus else {
        return Ok(Default::default());
    };
    let is_root = asked.root_for_itself;
    let asked = gpu::parse_list(list)?;
    let gres_conf = gpu::gres::conf_path();
    let node = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let (files, from) = gpu::device_files(config, &gres_conf, &node);
    let unnamed = AccountNames {
        user: "root".into(),
        groups: vec![],
    };
    let names = if is_root { &unnamed } else { names.get() };
    let who = gpu::policy::Requester {
        user: &names.user,
        groups: &names.groups,
        is_root,
    };
    let indexes = gpu::policy::check(config, &who, asked, files.len(), &from)?;
    Ok(gpu::edits_for(&indexes, config, &files, &from)?)
}

pub(crate) fn run(ctx: &Context, args: &RunArgs) -> Result<i32> {
    let terminal =
        process::terminal::Terminal::for_stdin().context("cannot make the container's terminal")?;
    let purpose = Purpose {
        terminal: terminal.as_ref().map(|t| {
            (
                std::os::fd::AsRawFd::as_raw_fd(&t.slave),
                t.slave_path.clone(),
            )
        }),
        needs_command: true,
        default_hostname: None,
        proc_hidepid: false,
        slurm_gpus: None,
        cgroup_path: Some(format!(
            "{}/run-{}",
            ctx.config.limits.cgroup_parent,
            std::process::id()
        )),
        partition: None,
        cgroup_v1_paths: Default::default(),
        slurm_constrains_devices: false,
    };
    let (spec, image, _in_use) = build_spec(ctx, args, &purpose)?;
    tracing::info!(image = %image.id, uid = spec.identity.host_uid, remap_root = spec.identity.remap_root, "starting container");
    let exit = process::run(&spec, terminal)?;
    if exit.oom_kills > 0 {
        let limit = spec
            .cgroup
            .as_ref()
            .and_then(|c| c.limits.memory)
            .map(human_size)
            .unwrap_or_default();
        eprintln!(
            "berth: {}",
            berth::limits::out_of_memory(exit.oom_kills, Some(&limit))
        );
    }
    Ok(exit.code)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, n)| bytes >= *n && bytes.is_multiple_of(*n))
        .map(|(u, n)| format!("{}{u}", bytes / n))
        .unwrap_or_else(|| format!("{bytes} bytes"))
}

fn parse_ids(text: &str) -> Result<(u32, Option<u32>)> {
    let mut parts = text.splitn(2, ':');
    let uid = parts
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("--user {text:?}: expected UID[:GID] as numbers"))?;
    let gid = parts
        .next()
        .map(str::parse)
        .transpose()
        .with_context(|| format!("--user {text:?}: expected UID[:GID] as numbers"))?;
    Ok((uid, gid))
}

/// Who the container runs as: the caller; root may name a user with --user,
/// and a root caller honours the image's User.
/// The identity `--user` asks for (root only), or None without it.
fn asked_identity(args: &RunArgs, privileged: bool) -> Result<Option<Identity>> {
    match (&args.user, privileged) {
        (Some(user), true) => user_identity(user, args.remap_root).map(Some),
        (Some(_), false) => bail!("--user: only root may choose the user a container runs as"),
        (None, _) => Ok(None),
    }
}

/// The identity of `--user UID[:GID]` for root acting for that user.
pub(crate) fn user_identity(user: &str, remap_root: bool) -> Result<Identity> {
    let (uid, gid) = parse_ids(user)?;
    Ok(host_identity(uid, gid, remap_root, true))
}

/// Without `--user`: the caller, or for a root caller the image's User.
fn identity(args: &RunArgs, image: &ResolvedImage, privileged: bool) -> Result<Identity> {
    let (uid, gid) = match (privileged, &image.config.user) {
        (true, Some(user)) if !user.is_empty() => image_user(user, image)?,
        (true, _) => (0, Some(0)),
        (false, _) => (
            nix::unistd::getuid().as_raw(),
            Some(nix::unistd::getgid().as_raw()),
        ),
    };
    Ok(host_identity(uid, gid, args.remap_root, privileged))
}

/// Completes a host identity: the gid from the name service when not given,
/// and the supplementary groups (kept only when berth runs as root).
fn host_identity(uid: u32, gid: Option<u32>, remap_root: bool, privileged: bool) -> Identity {
    // The name service (maybe LDAP) is asked only for another user's group
    // list; it costs more than the rest of start-up together.
    let (gid, host_groups) = if !privileged {
        (gid.unwrap_or(uid), vec![])
    } else if uid == 0 && gid.is_none_or(|g| g == 0) {
        let groups = nix::unistd::getgroups().unwrap_or_default();
        (0, groups.iter().map(|g| g.as_raw()).collect())
    } else {
        let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let gid = gid.or(user.as_ref().map(|u| u.gid.as_raw())).unwrap_or(uid);
        (gid, supplementary_groups(uid, gid))
    };
    Identity {
        host_uid: uid,
        host_gid: gid,
        host_groups,
        remap_root,
        privileged,
    }
}

/// Resolves an image's `User` (numeric or a name in the image's /etc/passwd).
fn image_user(user: &str, image: &ResolvedImage) -> Result<(u32, Option<u32>)> {
    let (name, group) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let passwd = image
        .layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())
        .unwrap_or_default();
    let uid = name.parse().ok().or_else(|| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == name)
            .and_then(|f| f[2].parse().ok())
    });
    let Some(uid) = uid else {
        bail!("the image's User {user:?} is not in its /etc/passwd")
    };
    let gid = match group {
        Some(g) => Some(
            g.parse()
                .with_context(|| format!("the image's User {user:?}: group must be numeric"))?,
        ),
        None => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].parse() == Ok(uid))
            .and_then(|f| f[3].parse().ok()),
    };
    Ok((uid, gid))
}

/// A host user's supplementary groups, from the name service.
pub(crate) fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Some(user) = nix::unistd::User::from_uid(uid.into()).ok().flatten() else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name.as_str()) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&name, gid.into())
        .map(|g| g.iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
}

/// Checks, as the container's user, that a mount source is readable: root
/// mounting for someone else must not open paths that user cannot reach.
fn check_user_can_read(path: &Path, id: &Identity) -> Result<()> {
    use nix::unistd::AccessFlags;
    let denied = || berth::mounts::MountError::PermissionDenied {
        path: path.to_path_buf(),
        uid: id.host_uid,
    };
    let readable = if !id.privileged {
        nix::unistd::access(path, AccessFlags::R_OK).is_ok()
    } else {
        id.host_uid == 0
            || berth::as_user::as_user(id.host_uid, id.host_gid, &id.host_groups, || {
                nix::unistd::access(path, AccessFlags::R_OK).is_ok()
            })
    };
    if readable {
        Ok(())
    } else {
        Err(denied().into())
    }
}

fn process_spec(args: &RunArgs, image: &ResolvedImage, needs_command: bool) -> Result<ProcessSpec> {
    let config = &image.config;
    let argv: Vec<String> = if args.command.is_empty() {
        config
            .entrypoint
            .iter()
            .flatten()
            .chain(config.cmd.iter().flatten())
            .cloned()
            .collect()
    } else {
        args.command.clone()
    };
    if argv.is_empty() && needs_command {
        bail!("no command given and the image has no Entrypoint or Cmd");
    }
    let mut env: Vec<String> = config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if std::io::stdout().is_terminal() {
        if let Ok(term) = std::env::var("TERM") {
            set_env(&mut env, &format!("TERM={term}"));
        }
    }
    for e in &args.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => set_env(&mut env, e),
            None if !e.is_empty() => {
                if let Ok(v) = std::env::var(e) {
                    set_env(&mut env, &format!("{e}={v}"));
                }
            }
            _ => bail!("--env {e:?}: expected K=V or K"),
        }
    }
    let cwd = PathBuf::from(
        args.workdir
            .clone()
            .or_else(|| config.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
    );
    if !cwd.is_absolute() {
        bail!("--workdir {}: must be an absolute path", cwd.display());
    }
    Ok(ProcessSpec {
        args: argv,
        env,
        cwd,
    })
}

fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split('=').next().unwrap_or(entry);
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(entry.to_string());
}
