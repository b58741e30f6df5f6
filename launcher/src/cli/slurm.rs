//! `berth slurm-start` (hidden): the helper the SPANK plugin runs, as root,
//! from the first task of a step on a node. It brings the image into the
//! node's store, starts the step's container keeper (see
//! `berth::process::keeper`) and prints, as one JSON line, what the tasks
//! need to join it: the keeper's pid, the image's environment, the working
//! directory, the image's entrypoint and the compiled seccomp program.
//! `berth slurm-join` gives a later step of the job its own view into a
//! named container.

use anyhow::{bail, Result};

use berth::limits::cgroup::ContainerCgroup;
use berth::process::keeper::{self, Kept};
use berth::slurm::record::KeeperRecord;
use berth::spec::StepViewSpec;
use nix::unistd::Pid;

use super::identity::user_identity;
use super::run::{build_spec, devices_and_cgroup, Asks, Purpose, RunArgs, SlurmGpus};
use super::user_mounts::user_mounts;
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
}

impl SlurmStepArgs {
    /// How a step's container differs from `berth run`'s.
    fn purpose(&self) -> Result<Purpose> {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok());
        let (cgroup_path, cgroup_v1_paths) = match self.stepd_pid {
            Some(pid) => {
                use berth::limits::cgroup::{is_v2, V1_CONTROLLERS};
                let text =
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let placement = berth::slurm::placement::container_cgroups(
                    &text,
                    pid,
                    self.watch_pid.is_none(),
                    &self.container_id,
                    (!is_v2()).then_some(V1_CONTROLLERS),
                );
                (Some(placement.unified), placement.v1)
            }
            None => (None, Default::default()),
        };
        Ok(Purpose {
            terminal: None,
            needs_command: false,
            default_hostname: hostname,
            proc_hidepid: true,
            cgroup_path,
            cgroup_v1_paths,
            partition: self.partition.clone(),
            slurm_constrains_devices: std::fs::read_to_string(
                self.gres_conf.with_file_name("cgroup.conf"),
            )
            .is_ok_and(|text| berth::slurm::placement::constrains_devices(&text)),
            slurm_gpus: match self.slurm_gpus.as_deref() {
                None => None,
                Some(list) => Some(SlurmGpus {
                    indexes: match list {
                        "" => vec![],
                        list => berth::gpu::parse_list(list)?.unwrap_or_default(),
                    },
                    gres_conf: self.gres_conf.clone(),
                    node: self.node_name.clone(),
                }),
            },
        })
    }
}

/// Makes the cgroup, starts the keeper in it; the keeper's record with
/// the cgroup's directories (which outlive this helper: the plugin removes
/// them with the container).
fn start_keeper_in_cgroup(
    kept: Kept,
    cgroup: Option<&berth::spec::CgroupSpec>,
    step: &SlurmStepArgs,
) -> Result<KeeperRecord> {
    let cgroup = cgroup.map(ContainerCgroup::for_spec).transpose()?;
    let pid = keeper::spawn_keeper(kept, step.watch_pid.map(Pid::from_raw), cgroup.as_ref())?;
    let mut record = KeeperRecord::of_keeper(pid.as_raw())
        .map_err(|e| anyhow::anyhow!("the container's keeper is gone ({e})"))?;
    record.cgroup_dirs = cgroup.map(ContainerCgroup::keep).unwrap_or_default();
    // Slurm's configuration is beside its gres.conf.
    record.slurm_signals_task_descendants = berth::slurm::files::signals_tasks_and_descendants(
        step.gres_conf
            .parent()
            .unwrap_or(std::path::Path::new("/etc/slurm")),
    );
    Ok(record)
}

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmStartArgs {
    #[command(flatten)]
    step: SlurmStepArgs,
    #[command(flatten)]
    run: RunArgs,
}

pub(crate) fn slurm_start(ctx: &Context, args: &SlurmStartArgs) -> Result<i32> {
    if !ctx.privileged || args.run.user_is_unset() {
        bail!("slurm-start is run by the SPANK plugin, as root, with --user");
    }
    let purpose = args.step.purpose()?;
    // The layer locks are inherited by the keeper and held as long as it lives.
    let (spec, image, _in_use) = build_spec(ctx, &args.run, &purpose)?;
    let record = KeeperRecord {
        image: image.id.clone(),
        env: spec.process.env.clone(),
        device_env: spec.devices.env.clone(),
        workdir: Some(spec.process.cwd.to_string_lossy().into_owned()),
        entrypoint: image.config.entrypoint.clone().unwrap_or_default(),
        seccomp: spec.seccomp_program.as_deref().map(hex::encode),
        root_capabilities: spec.root_capabilities.iter().map(|c| c.index()).collect(),
        ..start_keeper_in_cgroup(Kept::Container(&spec), spec.cgroup.as_ref(), &args.step)?
    };
    println!("{}", record.to_line());
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmJoinArgs {
    /// The keeper of the named container (made by an earlier step) to join.
    #[arg(long, value_name = "PID")]
    join_pid: i32,
    /// The job's user: UID[:GID].
    #[arg(long, value_name = "UID[:GID]")]
    user: String,
    /// This step's bind mounts: SRC:DST[:ro|rw].
    #[arg(short = 'm', long = "mount", value_name = "SRC:DST[:OPTS]")]
    mounts: Vec<String>,
    /// This step's working directory (made when missing).
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<std::path::PathBuf>,
    #[command(flatten)]
    step: SlurmStepArgs,
}

/// `berth slurm-join` (hidden): a step's own view into a named container an
/// earlier step made (see `berth::spec::StepViewSpec`): this step's GPUs
/// (and nothing of the earlier step's), mounts and cgroup over the
/// container's files. Prints the keeper's pid, the devices' environment and
/// the cgroup as one JSON line.
pub(crate) fn slurm_join(ctx: &Context, args: &SlurmJoinArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("slurm-join is run by the SPANK plugin, as root");
    }
    let purpose = args.step.purpose()?;
    let identity = user_identity(&args.user, false)?;
    let mounts = user_mounts(&ctx.config, &args.mounts, &identity)?;
    let asks = Asks {
        gpus: None,
        limits: Default::default(),
        root_for_itself: false,
    };
    let (devices, cgroup) = devices_and_cgroup(ctx, &identity, &asks, &purpose, None)?;
    if let Some(dir) = args.workdir.as_ref().filter(|d| !d.is_absolute()) {
        bail!("--workdir {}: must be an absolute path", dir.display());
    }
    let view = StepViewSpec {
        devices,
        mounts,
        workdir: args.workdir.clone(),
        identity,
        cgroup,
    };
    let join = berth::sys::pidfd_open(Pid::from_raw(args.join_pid))
        .map_err(|e| anyhow::anyhow!("the named container is gone ({e})"))?;
    let record = KeeperRecord {
        device_env: view.devices.env.clone(),
        ..start_keeper_in_cgroup(
            Kept::StepView {
                join: &join,
                view: &view,
            },
            view.cgroup.as_ref(),
            &args.step,
        )?
    };
    println!("{}", record.to_line());
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
        groups: super::identity::supplementary_groups(uid, gid),
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
