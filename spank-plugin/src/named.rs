//! Named containers, as a step's tasks reach them: a job's (plugstack
//! `container_scope=job`: state under `<runtime_dir>/slurm/<job>.name.<NAME>/`),
//! one kept on the node after the job (`container_scope=global`: the
//! `berth` helper keeps it under the store), and a running step's own
//! container joined as `JOBID.STEPID`.

use std::fs;
use std::process::Command;

use slurm_conf::plugstack::{ContainerScope, PlugstackArgs};

use berth::slurm::record::KeeperRecord;

use crate::entrypoint::run_if_asked;
use crate::ffi;
use crate::helper::{run_slurm_start, step_view, Start};
use crate::options::{ContainerOptions, NameMode};
use crate::remote::end_container;
use crate::state::{
    container_dir, live_keeper, lock_state_dir, make_state_dir, owner_of, record_keeper,
    record_owner, step_dir,
};

/// This step's container: the step's own new one, or a named one of the
/// job (made when missing; `:create` fails if it exists) seen through this step's
/// own view; None with `:no_exec` (made or kept, the tasks run outside).
pub(crate) fn container_for_step(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
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
        end_container(args, &old, Some(job), None);
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
            let container_id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let start = Start::Own {
                tied_to_step: name.is_none(),
                container_id: &container_id,
            };
            let mut reply = run_slurm_start(sp, args, options, Some(image), (uid, gid), start)?;
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
            // Once for the step, before its other tasks find the container.
            if mode != NameMode::NoExec {
                reply = run_if_asked(sp, options, reply, (uid, gid), &dir)?;
            }
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
pub(crate) fn kept_after_job(args: &PlugstackArgs, options: &ContainerOptions) -> bool {
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
pub(crate) fn step_in_kept_container(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
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
    let start = Start::Kept { name, job, step };
    let image = options.image.as_deref();
    let mut reply = run_slurm_start(sp, args, options, image, (uid, gid), start)?;
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
    // Once for the step, before its other tasks find the view.
    let reply = run_if_asked(sp, options, reply, (uid, gid), &dir)?;
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
pub(crate) fn leave_kept_containers(args: &PlugstackArgs, uid: u32, job: u32) {
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
pub(crate) fn step_named(name: &str) -> Option<(u32, u32)> {
    let (job, step) = name.split_once('.')?;
    Some((job.parse().ok()?, step.parse().ok()?))
}

/// Joins the running container of step `running` (`--container-name=
/// JOBID.STEPID`, as pyxis names unnamed containers) through this step's
/// own view. Only the job's user's own step: another user's, or no
/// running container there, get the same answer.
pub(crate) fn join_running_step(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
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
