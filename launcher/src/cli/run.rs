//! `berth run`: its options, turned into a request for the one spec
//! builder (`berth::spec::build`), and the container run from the spec.

use std::io::IsTerminal;

use anyhow::{Context as _, Result};

use berth::spec::build::{build_spec, Built, ContainerRequest, Purpose};
use berth::{audit, process};

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
    /// The container's network: the host's, or none but a loopback of its own.
    #[arg(long, value_name = "host|none", default_value = "host", value_parser = ["host", "none"])]
    network: String,
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
    /// What these options ask of the container.
    pub(crate) fn request(&self) -> ContainerRequest {
        ContainerRequest {
            image: self.image.clone(),
            command: self.command.clone(),
            mounts: self.mounts.clone(),
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            hostname: self.hostname.clone(),
            remap_root: self.remap_root,
            read_only: self.read_only,
            no_network: self.network == "none",
            gpus: self.gpus.clone(),
            limits: self.limits.asked(),
            user: self.user.clone(),
        }
    }
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
        term: std::env::var("TERM")
            .ok()
            .filter(|_| std::io::stdout().is_terminal()),
        needs_command: true,
        cgroup_path: Some(format!(
            "{}/run-{}",
            ctx.config.limits.cgroup_parent,
            std::process::id()
        )),
        ..Default::default()
    };
    let audit_uid = args
        .user
        .as_deref()
        .and_then(|u| u.split(':').next()?.parse().ok())
        .unwrap_or_else(|| nix::unistd::getuid().as_raw());
    let failed = |e: &anyhow::Error| {
        let mut record = audit::Record::new(
            audit::Event::StartFailed,
            audit::Origin::Run,
            audit_uid,
            &args.image,
        );
        record.reason = Some(format!("{e:#}"));
        audit::record(&ctx.config.audit, &record);
    };
    // The layer holds last until berth exits: `berth gc` leaves them alone.
    let Built {
        spec,
        image,
        in_use: _in_use,
    } = build_spec(&ctx.build_context(), ctx, &args.request(), &purpose)
        .map_err(anyhow::Error::from)
        .inspect_err(failed)?;
    tracing::info!(image = %image.id, uid = spec.identity.host_uid, remap_root = spec.identity.remap_root, "starting container");
    let started = audit::Record::new(
        audit::Event::Start,
        audit::Origin::Run,
        spec.identity.host_uid,
        &args.image,
    )
    .with_image(&ctx.store, &image.id)
    .with_spec(&spec);
    audit::record(&ctx.config.audit, &started);
    let since = std::time::Instant::now();
    let exit = process::run(&spec, terminal)
        .map_err(anyhow::Error::from)
        .inspect_err(failed)?;
    audit::record(
        &ctx.config.audit,
        &audit::Record {
            time: audit::now(),
            event: audit::Event::End,
            exit: Some(exit.code),
            duration_ms: Some(since.elapsed().as_millis() as u64),
            ..started
        },
    );
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
