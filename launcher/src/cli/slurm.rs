//! `berth slurm-start` (hidden): the helper the SPANK plugin runs, as root,
//! from the first task of a step on a node. It brings the image into the
//! node's store, starts the step's container keeper (see
//! `berth::process::keeper`) and prints, as one JSON line, what the tasks
//! need to join it: the keeper's pid, the image's environment, the working
//! directory, the image's entrypoint and the compiled seccomp program.
//! `berth slurm-join` gives a later step of the job its own view into a
//! named container.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Context as _, Result};

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
    /// The squashfs file to write (as the user).
    #[arg(long, value_name = "PATH")]
    output: std::path::PathBuf,
    /// The job's user, who owns the output: UID:GID.
    #[arg(long, value_name = "UID:GID")]
    user: String,
}

/// `berth slurm-save` (hidden): `--container-save`.
///
/// Only what the user can read is packed, and only the container's own
/// filesystem: root takes a detached copy of the container's root mount
/// alone (`open_tree` without `AT_RECURSIVE`: /proc, /dev, /sys and every
/// bind mount are simply not in it, whatever their paths), then mksquashfs
/// runs with the user's ids, umask 077, over that copy and writes into the
/// output directory the user's rights opened. Unreadable files are saved
/// empty, and said so.
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
    let (Some(parent), Some(name)) = (args.output.parent(), args.output.file_name()) else {
        bail!(
            "--container-save {}: not a file path",
            args.output.display()
        );
    };
    let dir =
        berth::as_user::open_user_path(Some(&rights), parent, libc::O_PATH | libc::O_DIRECTORY)?;
    let tree = container_root_tree(args.pid)
        .with_context(|| format!("cannot reach the container of keeper {}", args.pid))?;
    let tmp_name = format!(
        ".{}.berth-save.{}",
        name.to_string_lossy(),
        std::process::id()
    );
    let fd_path = |fd: &std::os::fd::OwnedFd| berth::as_user::fd_path(fd.as_fd());
    let source = format!("{}/", fd_path(&tree).display());
    let target = fd_path(&dir).join(&tmp_name);
    let log = nix::sys::memfd::memfd_create(
        c"berth-save-log",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let log_for_child = log.try_clone()?;
    let packed = berth::as_user::as_user(uid, gid, &rights.groups, || {
        let inherit = |fd: &std::os::fd::OwnedFd| {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .is_ok()
        };
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        inherit(&tree)
            && inherit(&dir)
            && std::process::Command::new("mksquashfs")
                .arg(&source)
                .arg(&target)
                .args(["-noappend", "-quiet", "-no-progress", "-no-xattrs"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(log_for_child))
                .status()
                .is_ok_and(|s| s.success())
    });
    let messages = read_log(log);
    let finish = || -> Result<()> {
        if !packed {
            bail!(
                "mksquashfs (as uid {uid}) failed: {}",
                messages
                    .lines()
                    .last()
                    .unwrap_or("cannot run it (apt-get install squashfs-tools)")
            );
        }
        let published = berth::as_user::as_user(uid, gid, &rights.groups, || {
            let Ok(file) = berth::sys::openat2(
                Some(dir.as_fd()),
                std::path::Path::new(&tmp_name),
                libc::O_RDONLY | libc::O_NOFOLLOW,
                berth::sys::RESOLVE_BENEATH | berth::sys::RESOLVE_NO_SYMLINKS,
            ) else {
                return false;
            };
            nix::sys::stat::fchmod(
                file.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .is_ok()
                && nix::fcntl::renameat(
                    Some(dir.as_raw_fd()),
                    tmp_name.as_str(),
                    Some(dir.as_raw_fd()),
                    name,
                )
                .is_ok()
        });
        if !published {
            bail!("cannot write {} as uid {uid}", args.output.display());
        }
        Ok(())
    };
    let result = finish();
    if result.is_err() {
        berth::as_user::as_user(uid, gid, &rights.groups, || {
            nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                tmp_name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .is_ok()
        });
    }
    result?;
    let unreadable = messages
        .lines()
        .filter(|l| l.starts_with("Failed to read file"))
        .count();
    if unreadable > 0 {
        eprintln!(
            "berth: --container-save: {unreadable} file(s) uid {uid} may not read were saved empty"
        );
    }
    Ok(0)
}

/// A detached copy of the root mount of the container `keeper` holds: the
/// container's own filesystem without anything mounted on it. Taken from
/// inside the keeper's mount namespace (a mount of another namespace cannot
/// be cloned), then this process goes back to its own.
fn container_root_tree(keeper: i32) -> Result<std::os::fd::OwnedFd> {
    use nix::sched::{setns, CloneFlags};
    use std::os::unix::fs::MetadataExt;
    // The pidfd pins the process: its pid cannot be reused while it is
    // checked (root's, running this same berth) and its namespace joined.
    let pidfd = berth::sys::pidfd_open(Pid::from_raw(keeper))?;
    let exe = |pid: &str| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
    };
    let is_keeper = std::fs::metadata(format!("/proc/{keeper}")).is_ok_and(|m| m.uid() == 0)
        && exe(&keeper.to_string()).is_some()
        && exe(&keeper.to_string()) == exe("self");
    if !is_keeper {
        bail!("process {keeper} is not a berth keeper");
    }
    let own = std::fs::File::open("/proc/self/ns/mnt")?;
    setns(&pidfd, CloneFlags::CLONE_NEWNS)?;
    let tree = berth::sys::open_tree_clone(std::path::Path::new("/"), false);
    setns(&own, CloneFlags::CLONE_NEWNS).context("cannot return to the host's mount namespace")?;
    Ok(tree?)
}

/// What a child wrote to a memfd log.
fn read_log(log: std::os::fd::OwnedFd) -> String {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::from(log);
    let mut text = String::new();
    let _ = file
        .rewind()
        .and_then(|_| file.take(1 << 20).read_to_string(&mut text));
    text
}
