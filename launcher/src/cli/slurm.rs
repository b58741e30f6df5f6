//! `berth slurm-start` (hidden): the helper the SPANK plugin runs, as root,
//! from the first task of a step on a node. It brings the image into the
//! node's store, starts the step's container keeper (see
//! `berth::slurm::step` and `berth::process::keeper`) and prints, as one
//! JSON line, the keeper's record: what the tasks need to join it.
//! `berth slurm-join` gives a later step of the job its own view into a
//! named container; `berth slurm-save` saves a container.

use anyhow::{bail, Result};

use berth::audit;

use berth::slurm::step::{
    leave_named, start_container, start_in_named, start_view, NameMode, NamedStep, StepOnNode,
};

use super::run::RunArgs;
use super::Context;

/// What the plugin tells both helpers about the step.
#[derive(clap::Args, Debug)]
pub(crate) struct SlurmStepArgs {
    /// The process whose end ends the container (the step's slurmstepd);
    /// without it the container lives until it is killed (named containers).
    #[arg(long, value_name = "PID")]
    watch_pid: Option<i32>,
    /// The step's GPUs: Slurm's global indexes (`SLURM_STEP_GPUS`).
    #[arg(long, value_name = "LIST")]
    slurm_gpus: Option<String>,
    /// The cluster's gres.conf (where the GPU indexes point).
    #[arg(long, value_name = "PATH", default_value = "/etc/slurm/gres.conf")]
    gres_conf: std::path::PathBuf,
    /// This node's name in Slurm.
    #[arg(long, value_name = "NAME", default_value = "")]
    node_name: String,
    /// The step's slurmstepd: the container's cgroup goes inside its step's
    /// (the job's, for a named container).
    #[arg(long, value_name = "PID")]
    stepd_pid: Option<i32>,
    /// The container's name among the node's (`JOB.STEP`, `JOB.name.NAME`).
    #[arg(long, value_name = "ID", default_value = "container")]
    container_id: String,
    /// The job's partition, for `[limits.partitions.NAME]`.
    #[arg(long, value_name = "NAME")]
    partition: Option<String>,
    /// Variables whose job value wins over the container's (`--container-env`).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    job_env: Vec<String>,
    /// Slurm's own mount for the step (the batch script, the PMIx server's
    /// directory), opened with the user's rights: SRC:DST[:FLAGS].
    #[arg(long, value_name = "SRC:DST[:FLAGS]")]
    slurm_mount: Vec<String>,
}

impl SlurmStepArgs {
    /// An audit record of this step's container for `uid`, image `image`.
    fn audit(&self, event: audit::Event, uid: u32, image: &str) -> audit::Record {
        let (job, step) = self
            .container_id
            .split_once('.')
            .map_or((None, None), |(j, s)| (j.parse().ok(), Some(s.to_string())));
        audit::Record {
            job,
            step,
            node: Some(self.node_name.clone()).filter(|n| !n.is_empty()),
            mounts: self.slurm_mount.clone(),
            devices: self
                .slurm_gpus
                .iter()
                .filter(|g| !g.is_empty())
                .map(|g| format!("gpu {g}"))
                .collect(),
            ..audit::Record::new(event, audit::Origin::Slurm, uid, image)
        }
    }

    /// Records how a step's container started (or why not).
    fn record_start(
        &self,
        ctx: &Context,
        uid: u32,
        request: &berth::spec::build::ContainerRequest,
        started: Result<&berth::slurm::record::KeeperRecord, String>,
    ) {
        let event = match &started {
            // no_exec and remove: nothing started.
            Ok(keeper) if keeper.pid <= 0 => return,
            Ok(_) => audit::Event::Start,
            Err(_) => audit::Event::StartFailed,
        };
        let mut record = self.audit(event, uid, &request.image);
        record.mounts.extend(request.mounts.iter().cloned());
        match started {
            Ok(keeper) => {
                record.pid = Some(keeper.pid).filter(|p| *p > 0);
                record = record.with_image(&ctx.store, &keeper.image);
            }
            Err(why) => record.reason = Some(why),
        }
        audit::record(&ctx.config.audit, &record);
    }

    fn step(&self) -> StepOnNode {
        StepOnNode {
            watch_pid: self.watch_pid,
            slurm_gpus: self.slurm_gpus.clone(),
            gres_conf: self.gres_conf.clone(),
            node_name: self.node_name.clone(),
            stepd_pid: self.stepd_pid,
            container_id: self.container_id.clone(),
            partition: self.partition.clone(),
            job_env: self.job_env.clone(),
            outlives_job: false,
            keeper_closes: vec![],
            slurm_mounts: self.slurm_mount.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmStartArgs {
    #[command(flatten)]
    step: SlurmStepArgs,
    /// The step is in the named container NAME kept after the job
    /// (`container_scope=global`): made when missing, joined when running.
    #[arg(long, value_name = "NAME", requires_all = ["job", "step_id"])]
    named: Option<String>,
    /// What the step does with the named container.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "create", "exec", "no_exec", "remove"])]
    name_mode: String,
    /// The job id (with --named).
    #[arg(long, value_name = "ID")]
    job: Option<u32>,
    /// The step id (with --named).
    #[arg(long, value_name = "ID")]
    step_id: Option<u32>,
    #[command(flatten)]
    run: RunArgs,
}

pub(crate) fn slurm_start(ctx: &Context, args: &SlurmStartArgs) -> Result<i32> {
    let request = args.run.request();
    let Some(user) = request.user.as_deref().filter(|_| ctx.privileged) else {
        bail!("slurm-start is run by the SPANK plugin, as root, with --user");
    };
    let uid = user_uid(user)?;
    let started = slurm_start_record(ctx, args, &request);
    args.step.record_start(
        ctx,
        uid,
        &request,
        started.as_ref().map_err(|e| format!("{e:#}")),
    );
    println!("{}", started?.to_line());
    Ok(0)
}

/// `slurm_start`'s container: its keeper's record.
fn slurm_start_record(
    ctx: &Context,
    args: &SlurmStartArgs,
    request: &berth::spec::build::ContainerRequest,
) -> Result<berth::slurm::record::KeeperRecord> {
    let user = request.user.as_deref().unwrap_or_default();
    Ok(match (&args.named, args.job, args.step_id) {
        (Some(name), Some(job), Some(step)) => {
            let named = NamedStep {
                name: name.clone(),
                mode: NameMode::parse(&args.name_mode).unwrap_or(NameMode::Auto),
                uid: user_uid(user)?,
                job,
                step,
            };
            let started = start_in_named(
                &ctx.build_context(),
                ctx,
                request,
                &args.step.step(),
                &named,
            );
            // no_exec: a record of no keeper (pid 0).
            started?.unwrap_or(berth::slurm::record::KeeperRecord {
                format: berth::slurm::record::RECORD_FORMAT,
                ..Default::default()
            })
        }
        _ => start_container(&ctx.build_context(), ctx, request, &args.step.step())?,
    })
}

/// The uid of `--user UID[:GID]`.
fn user_uid(user: &str) -> Result<u32> {
    user.split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("--user {user}: expected UID[:GID]"))
}

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmLeaveArgs {
    /// The user whose named containers are looked at.
    #[arg(long, value_name = "UID")]
    uid: u32,
    /// Only the containers this job was the last to use.
    #[arg(long, value_name = "ID")]
    job: Option<u32>,
}

/// `berth slurm-leave` (hidden): after a step or a job, ends the keepers of
/// the user's named containers no step uses any more (their writable
/// layers stay on disk).
pub(crate) fn slurm_leave(ctx: &Context, args: &SlurmLeaveArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("slurm-leave is run by the SPANK plugin, as root");
    }
    for (name, ended) in leave_named(
        &ctx.store,
        args.uid,
        args.job,
        &ctx.config.store.summary_dir,
    ) {
        if ended.oom_kills > 0 {
            eprintln!(
                "berth: container {name:?}: {}",
                berth::limits::out_of_memory(ended.oom_kills, None)
            );
        }
        for (dir, e) in ended.cgroup_errors {
            eprintln!("berth: cannot remove cgroup {}: {e}", dir.display());
        }
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmJoinArgs {
    /// The keeper of the named container (made by an earlier step) to join.
    #[arg(long, value_name = "PID")]
    join_pid: i32,
    /// That keeper's start time, as its record has it (a reused pid never passes).
    #[arg(long, value_name = "TICKS")]
    join_started: u64,
    /// The job's user: UID[:GID].
    #[arg(long, value_name = "UID[:GID]")]
    user: String,
    /// This step's bind mounts: SRC:DST[:ro|rw].
    #[arg(short = 'm', long = "mount", value_name = "SRC:DST[:OPTS]")]
    mounts: Vec<String>,
    /// This step's working directory (made when missing).
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// This step's tasks are root in a user namespace mapped to the user.
    #[arg(long)]
    remap_root: bool,
    /// This step sees the container's files read-only (a /tmp of its own).
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    step: SlurmStepArgs,
}

/// `berth slurm-join` (hidden): a step's own view into a named container an
/// earlier step made (see `berth::spec::StepViewSpec`): this step's GPUs
/// (and nothing of the earlier step's), mounts and cgroup over the
/// container's files. Prints the view keeper's record as one JSON line.
pub(crate) fn slurm_join(ctx: &Context, args: &SlurmJoinArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("slurm-join is run by the SPANK plugin, as root");
    }
    let request = berth::spec::build::ContainerRequest {
        mounts: args.mounts.clone(),
        workdir: args.workdir.clone(),
        remap_root: args.remap_root,
        read_only: args.read_only,
        ..Default::default()
    };
    let join = berth::slurm::record::KeeperRecord {
        pid: args.join_pid,
        started: args.join_started,
        ..Default::default()
    };
    let started = start_view(
        &ctx.build_context(),
        &join,
        &args.user,
        &request,
        &args.step.step(),
    );
    let uid = user_uid(&args.user)?;
    let image = format!("(a view of the container of keeper {})", args.join_pid);
    args.step.record_start(
        ctx,
        uid,
        &berth::spec::build::ContainerRequest { image, ..request },
        started.as_ref().map_err(|e| e.to_string()),
    );
    println!("{}", started?.to_line());
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmSaveArgs {
    /// The keeper of the container to save.
    #[arg(long, value_name = "PID")]
    pid: i32,
    /// The keeper's start time, as its record has it (a reused pid never passes).
    #[arg(long, value_name = "TICKS")]
    started: u64,
    /// The squashfs file to write (as the user).
    #[arg(long, value_name = "PATH")]
    output: std::path::PathBuf,
    /// The job's user, who owns the output: UID:GID.
    #[arg(long, value_name = "UID:GID")]
    user: String,
}

/// `berth slurm-save` (hidden): `--container-save` (see `berth::slurm::save`).
pub(crate) fn slurm_save(ctx: &Context, args: &SlurmSaveArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("slurm-save is run by the SPANK plugin, as root");
    }
    let (uid, gid) = args
        .user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--user: expected UID:GID"))?;
    let rights = berth::as_user::UserRights {
        uid,
        gid,
        groups: berth::spec::identity::supplementary_groups(uid, gid),
    };
    let keeper = berth::slurm::save::Keeper {
        pid: args.pid,
        started: args.started,
    };
    let saved = berth::slurm::save::save_container(keeper, &args.output, &rights)?;
    if saved.unreadable > 0 {
        eprintln!(
            "berth: --container-save: {} file(s) uid {uid} may not read were saved empty",
            saved.unreadable
        );
    }
    Ok(0)
}
