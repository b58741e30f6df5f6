//! slurmstepd's side: the first task of a step on a node has the `berth`
//! binary start the step's container keeper; every task joins the keeper's
//! namespaces, takes the image's environment, forks into its pid namespace
//! (`relay`), and before exec sets no_new_privs and the seccomp filter. The step's exit hook (or the job
//! epilog, if slurmstepd was killed) ends the keeper.
//!
//! Per-step state lives in `<runtime_dir>/slurm/<job>.<step>/` (root only):
//! `lock` (flock: one task creates the container, the others wait) and
//! `keeper.json` (the helper's answer).

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use slurm_conf::plugstack::{ContainerScope, PlugstackArgs};

use berth::idmap::UserNsMaps;
use berth::process::confine::{Confinement, Filter};
use berth::slurm::record::KeeperRecord;
use berth::spec::process::task_environment;

use crate::helper::{
    for_the_scripts_steps, run_slurm_start, run_slurm_start_named, save_target, step_view,
};
use crate::options::NameMode;
use crate::state::{
    container_dir, live_keeper, lock_state_dir, make_state_dir, owner_of, record_keeper,
    record_owner, recorded_keeper, step_dir,
};
use crate::{ffi, with_state};

/// What a task keeps between its privileged and its user hook.
pub struct Joined {
    seccomp: Option<Vec<u8>>,
    /// With --container-remap-root: the job's ids, which root inside the
    /// task's own user namespace is mapped to.
    remap_root: Option<(u32, u32)>,
    /// The capabilities the task keeps: remapped, root's configured ones
    /// (inside its user namespace only); otherwise none.
    capabilities: berth::caps::CapsHashSet,
    /// With --container-entrypoint: the image's Entrypoint, run before the task's argv.
    entrypoint: Option<Vec<String>>,
    /// Where the task starts (Slurm's own chdir to the job's directory
    /// comes after the privileged hook), and whether the user named it.
    workdir: Option<(String, bool)>,
    /// Which signals the task's relay passes on (see `relay`).
    forwarding: crate::relay::Forwarding,
}

/// `berth-entrypoint` (entrypoint/main.rs), built static by build.rs.
static ENTRYPOINT_HELPER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-entrypoint"));

fn plugstack(state_args: &Option<Result<PlugstackArgs, String>>) -> Result<PlugstackArgs, String> {
    match state_args {
        Some(Ok(a)) => Ok(a.clone()),
        Some(Err(e)) => Err(format!(
            "the node's berth setup is broken ({e}); tell the cluster admins"
        )),
        None => Ok(PlugstackArgs::default()),
    }
}

pub fn task_init_privileged(sp: ffi::spank_t) -> Result<(), String> {
    let (args, mut values, deferred) =
        with_state(|s| (s.args.clone(), s.values.clone(), s.deferred_errors.clone()));
    values.fill_from_env(|k| ffi::getenv(sp, k));
    if !values.asks_for_container() {
        return Ok(()); // no container asked for
    }
    if let Some(e) = deferred.first() {
        return Err(e.clone());
    }
    let options = values.parse()?;
    let args = plugstack(&args)?;
    let (uid, gid) = (
        ffi::job_uid(sp).ok_or("cannot read the job's uid")?,
        ffi::job_gid(sp).ok_or("cannot read the job's gid")?,
    );
    let (job, step) = (
        ffi::job_id(sp).ok_or("cannot read the job id")?,
        ffi::step_id(sp).ok_or("cannot read the step id")?,
    );
    if let Some(path) = &options.save {
        let path = save_target(sp, path)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        if !writable_by(dir, uid, gid) {
            return Err(format!(
                "--container-save: {} is not writable by uid {uid}",
                dir.display()
            ));
        }
    }
    // `JOBID.STEPID` joins that running step's container; otherwise a
    // named container lives for the whole job (the epilog ends it), an
    // unnamed one for this step.
    let reply = match options.name.as_ref().and_then(|n| step_named(&n.name)) {
        Some(running) => join_running_step(sp, &args, &options, (uid, gid), (job, step), running)?,
        None => {
            let made = match kept_after_job(&args, &options) {
                true => step_in_kept_container(sp, &args, &options, (uid, gid), (job, step))?,
                false => container_for_step(sp, &args, &options, (uid, gid), (job, step))?,
            };
            match made {
                Some(reply) => reply,
                None => return Ok(()), // no_exec: the tasks run outside it
            }
        }
    };

    let pid = reply.pid;
    let pidfd = reply
        .pidfd()
        .map_err(|e| format!("the step's container is gone ({e})"))?;
    // Into the container's cgroup (its limits and device filter) before
    // joining its cgroup namespace, whose root that cgroup is.
    for dir in container_cgroup_dirs(&reply) {
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
    let network = match reply.own_network {
        true => CloneFlags::CLONE_NEWNET,
        false => CloneFlags::empty(),
    };
    nix::sched::setns(
        pidfd.as_fd(),
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP
            | network,
    )
    .and_then(|()| nix::sched::setns(pid_namespace.as_fd(), CloneFlags::CLONE_NEWPID))
    .map_err(|e| format!("cannot enter the step's container: {e}"))?;
    if root_identity("/").ok() != Some(container_root) {
        return Err("the task did not land in the container's root filesystem (is slurmd running under chroot?); tell the cluster admins".into());
    }

    // The container's environment, except what the job owns (Slurm's,
    // MPI's, the GPU allocation, TERM and --container-env's variables,
    // where the job has them), then what its devices need, which wins over
    // the job's values (the container counts its GPUs from 0:
    // CUDA_VISIBLE_DEVICES); the job's locale goes (see `task_environment`).
    let job_names = ffi::job_env_names(sp);
    let env = task_environment(&reply.env, &reply.device_env, &reply.job_env, &job_names);
    for (name, value) in env.set {
        ffi::setenv(sp, &name, &value, true);
    }
    for name in env.unset {
        ffi::unsetenv(sp, &name);
    }
    // A remapped root's home is /root (where --container-mount-home puts
    // the user's), as in pyxis.
    if reply.remap_root {
        ffi::setenv(sp, "HOME", "/root", true);
    }
    let seccomp = reply.seccomp_program()?;
    // With --container-remap-root the task later becomes root of a user
    // namespace of its own; the capabilities it may hold there must stay in
    // the bounding set (they mean nothing outside that namespace).
    let remap_root = reply.remap_root.then_some((uid, gid));
    let capabilities: berth::caps::CapsHashSet = match remap_root {
        Some(_) => reply
            .root_capabilities
            .iter()
            .filter_map(|i| berth::caps::from_index(*i))
            .collect(),
        None => Default::default(),
    };
    // While still root: after Slurm's setuid the task cannot change it.
    berth::caps::limit_bounding_set(&capabilities)
        .map_err(|e| format!("cannot limit the task's bounding set: {e}"))?;
    if step == ffi::BATCH_STEP {
        // srun steps started by the script inherit its container options
        // through their environment (unless they give their own): its
        // relative paths made absolute (the script starts in the image's
        // directory), `:create` as a plain name (the container now
        // exists), nothing of `:remove`.
        for (name, value) in for_the_scripts_steps(sp, &options).environment() {
            ffi::setenv(sp, name, &value, false);
        }
    }
    let entrypoint = options
        .entrypoint
        .is_on()
        .then(|| reply.entrypoint.clone())
        .filter(|e| !e.is_empty());
    // As in pyxis: the image's working directory (else "/"), or
    // --container-workdir, a relative one taken from the image's; one that
    // does not exist fails the task (task_init).
    let image_workdir = reply.image_workdir.clone().unwrap_or_else(|| "/".into());
    let workdir = Some(match &options.workdir {
        Some(dir) => (
            Path::new(&image_workdir)
                .join(dir)
                .to_string_lossy()
                .into_owned(),
            true,
        ),
        None => (image_workdir, false),
    });
    with_state(|s| {
        s.joined = Some(Joined {
            seccomp,
            remap_root,
            capabilities,
            entrypoint,
            workdir,
            forwarding: crate::relay::Forwarding {
                stepd_reaches_child: reply.slurm_signals_task_descendants,
            },
        })
    });
    Ok(())
}

/// This step's container: the step's own new one, or a named one of the
/// job (made when missing; `:create` fails if it exists) seen through this step's
/// own view; None with `:no_exec` (made or kept, the tasks run outside).
fn container_for_step(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &crate::options::ContainerOptions,
    (uid, gid): (u32, u32),
    (job, step): (u32, u32),
) -> Result<Option<KeeperRecord>, String> {
    let name = options.name.as_ref();
    let dir = container_dir(args, name.map(|n| n.name.as_str()), job, step);
    // An unnamed container is always the step's own, new one.
    let mode = name.map_or(NameMode::Create, |n| n.mode);
    let shown_name = name.map_or("", |n| n.name.as_str());

    let lock = lock_state_dir(&dir)?;
    let existing = live_keeper(&dir);
    if mode == NameMode::Remove {
        // The step's other tasks: done by its first.
        let removed_mark = step_dir(args, job, step).join("removed");
        if removed_mark.exists() {
            return Ok(None);
        }
        // The job's own named container: ended now (the epilog would).
        let old = existing
            .filter(|r| r.uid == uid)
            .ok_or_else(|| format!("--container-name={shown_name}:remove: there is no container named {shown_name:?} in this job"))?;
        end_container(&old);
        let _ = fs::remove_file(dir.join("keeper.json"));
        let _ = make_state_dir(&step_dir(args, job, step))
            .and_then(|()| fs::write(&removed_mark, "").map_err(|e| e.to_string()));
        return Ok(None);
    }
    // A keeper of another user under this job's id (a job id reused while
    // an old job's container was left running): neither used nor ended.
    if existing.as_ref().is_some_and(|r| r.uid != uid) {
        return Err(format!(
            "the node holds a container of another user under job {job}'s name {shown_name:?}; tell the cluster admins"
        ));
    }
    // `create` makes a named container that must not exist yet; the other
    // tasks of the step find the one its first task made (recorded with
    // the step id).
    let made_by_this_step = existing.as_ref().is_some_and(|r| r.step == Some(step));
    if existing.is_some() && mode == NameMode::Create && name.is_some() && !made_by_this_step {
        return Err(format!(
            "--container-name={shown_name}:create: a container named {shown_name:?} already exists in this job (use :auto or :exec to use it)"
        ));
    }
    let reply = match existing {
        Some(reply) => reply,
        None => {
            if mode == NameMode::Exec {
                return Err(format!("there is no container named {shown_name:?} in this job (use :auto or :create to make one)"));
            }
            let image = options.image.as_deref().ok_or_else(|| {
                format!(
                    "there is no container named {shown_name:?} in this job yet: give --container-image"
                )
            })?;
            if name.is_none() {
                // Joinable as JOBID.STEPID by this user, noted before the
                // (maybe long) start; once, by the task that makes it.
                record_owner(&dir, uid)?;
            }
            // The batch script lives in slurmd's spool directory: bring it in.
            let script = (step == ffi::BATCH_STEP)
                .then(|| ffi::job_argv(sp).into_iter().next())
                .flatten();
            let container_id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut reply = run_slurm_start(
                sp,
                args,
                options,
                image,
                (uid, gid),
                script.as_deref(),
                name.is_none(),
                &container_id,
            )?;
            reply.step = Some(step);
            reply.uid = uid;
            ffi::info(&format!(
                "berth: job {job} step {step}: container of {image} started for uid {uid} (keeper pid {}); slurmstepd's signals {}",
                reply.pid,
                match reply.slurm_signals_task_descendants {
                    true => "reach the tasks' processes directly (proctrack/pgid or SignalChildrenProcesses=yes): relays pass on only SIGWINCH",
                    false => "reach only the tasks (proctrack/cgroup or linuxproc): relays pass them on",
                }
            ));
            record_keeper(&dir, &reply)?;
            reply
        }
    };
    if mode == NameMode::NoExec {
        return Ok(None); // the container is made (or kept); the tasks run outside it
    }
    // A later step sees the named container's files through its own view
    // (made under the container's lock, so the container stays meanwhile).
    let reply = match name.is_some() && reply.step != Some(step) {
        true => step_view(sp, args, options, (uid, gid), (job, step), &reply)?,
        false => reply,
    };
    drop(lock);
    Ok(Some(reply))
}

/// Whether the step's container is a named one kept on the node after the
/// job (plugstack `container_scope=global`, pyxis's default).
fn kept_after_job(args: &PlugstackArgs, options: &crate::options::ContainerOptions) -> bool {
    args.container_scope == ContainerScope::Global
        && options
            .name
            .as_ref()
            .is_some_and(|n| step_named(&n.name).is_none())
}

/// This step in a named container kept on the node after the job: the
/// helper makes the container when it must (its writable layer on disk,
/// under the store), starts its keeper when none runs, and gives the step
/// its own view into it (the first task of the step asks; the others find
/// the view in the step's directory, and the step's end removes it). None
/// with `no_exec`.
fn step_in_kept_container(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &crate::options::ContainerOptions,
    (uid, gid): (u32, u32),
    (job, step): (u32, u32),
) -> Result<Option<KeeperRecord>, String> {
    let name = options.name.as_ref().ok_or("no container name")?;
    let dir = step_dir(args, job, step);
    let _lock = lock_state_dir(&dir)?;
    if let Some(view) = live_keeper(&dir) {
        return Ok(Some(view));
    }
    if dir.join("no_exec").exists() {
        return Ok(None);
    }
    // The job's epilog ends the user's containers no step uses any more.
    note_kept_containers(args, job, uid)?;
    let mut reply = run_slurm_start_named(sp, args, options, (uid, gid), (job, step), name)?;
    if reply.pid == 0 {
        // no_exec: the container is made (or kept); the tasks run outside it.
        fs::write(dir.join("no_exec"), "")
            .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
        return Ok(None);
    }
    reply.uid = uid;
    ffi::info(&format!(
        "berth: job {job} step {step}: in named container {:?} (kept after the job) for uid {uid} (view keeper pid {})",
        name.name, reply.pid
    ));
    record_keeper(&dir, &reply)?;
    Ok(Some(reply))
}

/// Notes that job `job` used named containers kept after it, and whose:
/// `<runtime_dir>/slurm/<job>.kept` holds the uid.
fn note_kept_containers(args: &PlugstackArgs, job: u32, uid: u32) -> Result<(), String> {
    let path = args.runtime_dir.join("slurm").join(format!("{job}.kept"));
    fs::write(&path, uid.to_string()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Has the `berth` helper end the keepers of `uid`'s named containers that
/// job `job` was the last to use and no step uses any more (their
/// writable layers stay on disk).
fn leave_kept_containers(args: &PlugstackArgs, uid: u32, job: u32) {
    let out = Command::new(&args.berth)
        .arg("--config-if-present")
        .arg(&args.config)
        .args([
            "-q",
            "slurm-leave",
            "--uid",
            &uid.to_string(),
            "--job",
            &job.to_string(),
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output();
    match out {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                ffi::error(line);
            }
        }
        Err(e) => ffi::error(&format!("berth: cannot run {}: {e}", args.berth.display())),
    }
}

/// `JOBID.STEPID` as a container name: a running step's own container.
fn step_named(name: &str) -> Option<(u32, u32)> {
    let (job, step) = name.split_once('.')?;
    Some((job.parse().ok()?, step.parse().ok()?))
}

/// Joins the running container of step `running` (`--container-name=
/// JOBID.STEPID`, as pyxis names unnamed containers) through this step's
/// own view. Only the job's user's own step: another user's, or no
/// running container there, get the same answer.
fn join_running_step(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &crate::options::ContainerOptions,
    (uid, gid): (u32, u32),
    (job, step): (u32, u32),
    (their_job, their_step): (u32, u32),
) -> Result<KeeperRecord, String> {
    let mode = options.name.as_ref().map(|n| n.mode);
    if matches!(
        mode,
        Some(NameMode::Create | NameMode::NoExec | NameMode::Remove)
    ) {
        return Err(format!(
            "--container-name={their_job}.{their_step}: names a running step's container, which can only be joined (use :exec or no mode)"
        ));
    }
    let none = || {
        format!(
            "--container-name={their_job}.{their_step}: no running container of step {their_job}.{their_step} of uid {uid} on this node"
        )
    };
    if (their_job, their_step) == (job, step) {
        return Err(none());
    }
    if options.save.is_some() {
        return Err(format!(
            "--container-save: a running step's container is saved by that step (step {their_job}.{their_step})"
        ));
    }
    let dir = step_dir(args, their_job, their_step);
    // Whose it is, before waiting on its lock: another user's step being
    // made (a long pull) neither holds this step up nor shows it exists.
    if owner_of(&dir) != Some(uid) {
        return Err(none());
    }
    // Its lock keeps it from being replaced while this step joins.
    let lock_file = fs::File::open(dir.join("lock")).map_err(|_| none())?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock step {their_job}.{their_step}: {e}"))?;
    let theirs = live_keeper(&dir)
        .filter(|r| r.uid == uid && r.step == Some(their_step))
        .ok_or_else(none)?;
    step_view(sp, args, options, (uid, gid), (job, step), &theirs)
}

/// The device and inode of a directory, to tell two roots apart.
fn root_identity(path: &str) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Whether `dir` (a host path) is writable by `uid`/`gid`: checked in a child
/// that takes the user's ids, since this task is still root.
fn writable_by(dir: &Path, uid: u32, gid: u32) -> bool {
    berth::as_user::as_user(uid, gid, &[], || {
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
    })
}

pub fn task_init(sp: ffi::spank_t) -> Result<(), String> {
    let Some(joined) = with_state(|s| s.joined.take()) else {
        return Ok(());
    };
    // From here on, the child in the container's pid namespace.
    crate::relay::enter_pid_namespace(joined.forwarding)?;
    if let Some((dir, named)) = &joined.workdir {
        match (std::env::set_current_dir(dir), named) {
            (Ok(()), _) => {}
            (Err(e), true) => return Err(format!("--container-workdir: {dir}: {e}")),
            // The image's own (a WORKDIR /root the user may not enter):
            // its root instead, said once.
            (Err(e), false) => {
                ffi::info(&format!(
                    "berth: the image's working directory {dir}: {e}: starting in /"
                ));
                std::env::set_current_dir("/")
                    .map_err(|e| format!("cannot enter the container's /: {e}"))?;
            }
        }
        // The path as the kernel resolved it (`..` cannot leave the root).
        let cwd = std::env::current_dir().map_or_else(|_| dir.clone(), |d| d.display().to_string());
        ffi::setenv(sp, "PWD", &cwd, true);
    }
    if let Some(entrypoint) = &joined.entrypoint {
        run_through_entrypoint(sp, entrypoint)?;
    }
    // Remapped, the task is root of a user namespace of its own, with the
    // configured capabilities there; otherwise it has none (Slurm's setuid).
    if let Some((uid, gid)) = joined.remap_root {
        enter_remapped_user_namespace(uid, gid)?;
    }
    Confinement {
        groups: None,
        ids: None,
        capabilities: &joined.capabilities,
        filter: Filter::Set(joined.seccomp.as_deref()),
    }
    .apply()
    .map_err(|e| e.to_string())
}

/// --container-entrypoint: the task runs `ENTRYPOINT... ARGV...`. Slurm
/// 23.11 and later prepend the entrypoint to the argv Slurm execs (and
/// look its first word up in the container's PATH); before, that argv
/// cannot grow, so `berth-entrypoint` takes argv[0]'s place (from a memfd,
/// through the container's /proc) and execs `ENTRYPOINT... ARGV0 ARGS...`.
fn run_through_entrypoint(sp: ffi::spank_t, entrypoint: &[String]) -> Result<(), String> {
    match ffi::prepend_task_argv(sp, entrypoint) {
        Some(true) => Ok(()),
        Some(false) => {
            Err("--container-entrypoint: Slurm refused to prepend the entrypoint".into())
        }
        None => run_through_entrypoint_helper(sp, entrypoint),
    }
}

/// `run_through_entrypoint` where Slurm has no `spank_prepend_task_argv` (22.05).
fn run_through_entrypoint_helper(sp: ffi::spank_t, entrypoint: &[String]) -> Result<(), String> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::os::fd::{AsRawFd, IntoRawFd};
    let fail = |e: &dyn std::fmt::Display| format!("--container-entrypoint: {e}");
    // MFD_EXEC where the kernel knows it (6.3+, which may default to noexec memfds).
    let memfd = memfd_create(
        c"berth-entrypoint",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::from_bits_retain(libc::MFD_EXEC),
    )
    .or_else(|_| memfd_create(c"berth-entrypoint", MemFdCreateFlag::MFD_CLOEXEC))
    .map_err(|e| fail(&e))?;
    let mut file = fs::File::from(memfd);
    file.write_all(ENTRYPOINT_HELPER).map_err(|e| fail(&e))?;
    let program = format!("/proc/self/fd/{}", file.as_raw_fd());
    let argv0 = ffi::replace_task_argv0(sp, &program)
        .ok_or_else(|| fail(&"cannot read the task's argv"))?;
    // Close-on-exec: the kernel has the executable open once exec starts.
    let _ = file.into_raw_fd();
    ffi::setenv(sp, "BERTH_ARGV0", &argv0, true);
    ffi::setenv(sp, "BERTH_ENTRYPOINT", &entrypoint.join("\u{1f}"), true);
    Ok(())
}

/// --container-remap-root: the task (already the job's user) enters a user
/// namespace of its own where it is root (its capabilities there are set
/// by the confinement that follows). The container's mount namespace
/// belongs to the host's user namespace, so this root can change no mount;
/// outside, the task is still the user.
fn enter_remapped_user_namespace(uid: u32, gid: u32) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("--container-remap-root: cannot create a user namespace: {e}"))?;
    // After Slurm's setuid the task is not dumpable, which leaves its /proc
    // files to root: for as long as it writes its maps, they are its own.
    let _ = nix::sys::prctl::set_dumpable(true);
    let written = UserNsMaps::root_as(uid, gid).write_to(Path::new("/proc/self"));
    // Not dumpable again until exec: the task still holds slurmstepd's
    // descriptors, which no process of the container may take.
    let _ = nix::sys::prctl::set_dumpable(false);
    written.map_err(|e| format!("--container-remap-root: {e}"))
}

/// Ends the keeper of this step and removes its state.
pub fn step_exit(sp: ffi::spank_t) {
    let (args, mut values) =
        with_state(|s| (plugstack(&s.args).unwrap_or_default(), s.values.clone()));
    values.fill_from_env(|k| ffi::getenv(sp, k));
    let (Some(job), Some(step)) = (ffi::job_id(sp), ffi::step_id(sp)) else {
        return;
    };
    // Options that do not parse made no container: the tasks failed on them.
    let options = values.parse().unwrap_or_default();
    let kept = kept_after_job(&args, &options);
    if let Some(path) = &options.save {
        // A kept container is saved through this step's view of it.
        let name = options.name.as_ref().map(|n| n.name.as_str());
        let dir = match kept {
            true => step_dir(&args, job, step),
            false => container_dir(&args, name, job, step),
        };
        let saved = save_target(sp, path).and_then(|path| save_container(sp, &args, &dir, &path));
        if let Err(e) = saved {
            ffi::error(&format!("berth: --container-save: {e}"));
        }
    }
    // A kept container's keeper stays for the job's later steps: the
    // job's epilog stops it if no other job uses it.
    remove_step(&step_dir(&args, job, step));
}

/// Has the `berth` binary pack the container's filesystem into `path`, as the job's user.
fn save_container(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    dir: &Path,
    path: &Path,
) -> Result<(), String> {
    let keeper = live_keeper(dir).ok_or("the container is already gone")?;
    let (uid, gid) = (
        ffi::job_uid(sp).ok_or("no uid")?,
        ffi::job_gid(sp).ok_or("no gid")?,
    );
    let out = Command::new(&args.berth)
        .arg("--config-if-present")
        .arg(&args.config)
        .args([
            "-q",
            "slurm-save",
            "--pid",
            &keeper.pid.to_string(),
            "--started",
            &keeper.started.to_string(),
            "--output",
        ])
        .arg(path)
        .args(["--user", &format!("{uid}:{gid}")])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.berth.display()))?;
    if out.status.success() {
        ffi::info(&format!("berth: saved the container to {}", path.display()));
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(stderr
            .lines()
            .last()
            .unwrap_or("failed")
            .trim_start_matches("berth: ")
            .to_string())
    }
}

/// Ends every keeper of a job and removes its state.
pub fn job_epilog(sp: ffi::spank_t, args: &PlugstackArgs) {
    let Some(job) = ffi::job_id(sp) else { return };
    let Ok(entries) = fs::read_dir(args.runtime_dir.join("slurm")) else {
        return;
    };
    let kept = args.runtime_dir.join("slurm").join(format!("{job}.kept"));
    for entry in entries.flatten() {
        if entry.path() != kept
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{job}."))
        {
            remove_step(&entry.path());
        }
    }
    // Once the job's views are gone: its user's kept containers no step
    // uses any more are stopped (their files stay).
    if let Some(uid) = fs::read_to_string(&kept)
        .ok()
        .and_then(|u| u.trim().parse().ok())
    {
        leave_kept_containers(args, uid, job);
        let _ = fs::remove_file(&kept);
    }
}

fn remove_step(dir: &Path) {
    if let Some(reply) = recorded_keeper(dir) {
        end_container(&reply);
    }
    let _ = fs::remove_dir_all(dir);
}

/// Ends a container's keeper and removes its cgroup, telling the user of
/// an out-of-memory kill or a cgroup left behind.
pub(crate) fn end_container(record: &KeeperRecord) {
    let ended = record.end();
    if ended.oom_kills > 0 {
        ffi::error(&format!(
            "berth: {}",
            berth::limits::out_of_memory(ended.oom_kills, None)
        ));
    }
    for (dir, e) in ended.cgroup_errors {
        ffi::error(&format!(
            "berth: cannot remove cgroup {}: {e}",
            dir.display()
        ));
    }
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
