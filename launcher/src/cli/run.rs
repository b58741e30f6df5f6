//! `berth run`: turns options, config and image into a ContainerSpec and
//! hands it to `berth::process::run`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use berth::image::{ImageSource, ResolvedImage};
use berth::process;
use berth::spec::{ContainerSpec, Identity, ProcessSpec};

use super::identity::{asked_identity, identity};
use super::user_mounts::user_mounts;
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
    pub(crate) remap_root: bool,
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
    pub(crate) user: Option<String>,
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
