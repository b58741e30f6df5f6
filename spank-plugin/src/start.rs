//! The step's container on this node, as a task reaches it: the step's
//! own, a named one's view, or a running step's joined (see named.rs). The
//! step's tasks on the node take it one at a time, so the first starts it
//! and the others find it; if the first fails, it says why once, naming
//! the node, and the others fail with it without a line of their own (and
//! without trying again: a pull that failed is not repeated per task).

use std::fs;

use slurm_conf::plugstack::PlugstackArgs;

use berth::slurm::record::KeeperRecord;

use crate::ffi;
use crate::named::{
    container_for_step, join_running_step, kept_after_job, step_in_kept_container, step_named,
};
use crate::options::ContainerOptions;
use crate::state::{lock_state_dir_file, step_dir};

/// The container this task joins, or None with `:no_exec` (the tasks run
/// outside it). An error is the step's on this node.
pub(crate) fn container_of_step(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
    user: (u32, u32),
    (job, step): (u32, u32),
) -> Result<Option<KeeperRecord>, String> {
    let dir = step_dir(args, job, step);
    let _one_task_at_a_time = lock_state_dir_file(&dir, "start.lock")?;
    let failed = dir.join("failed");
    // Written by this step's slurmstepd (its pid and start time head it):
    // one left by an earlier job under a reused id is not this step's.
    let stepd = KeeperRecord::of_keeper(nix::unistd::getppid().as_raw())
        .map(|r| format!("{} {}", r.pid, r.started))
        .unwrap_or_default();
    if let Ok(text) = fs::read_to_string(&failed) {
        match text.split_once('\n') {
            Some((by, why)) if by == stepd => {
                crate::with_state(|s| s.error_shown = true);
                return Err(why.to_string());
            }
            _ => {
                let _ = fs::remove_file(&failed);
            }
        }
    }
    match usable(reached(sp, args, options, user, (job, step)), options) {
        Ok(reply) => Ok(reply),
        Err(e) => {
            let node = std::env::var("SLURMD_NODENAME").unwrap_or_default();
            let e = format!("{e} (node {node})");
            let _ = fs::write(&failed, format!("{stepd}\n{e}"));
            Err(e)
        }
    }
}

/// The container, reached the way the step's options say.
fn reached(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
    user: (u32, u32),
    (job, step): (u32, u32),
) -> Result<Option<KeeperRecord>, String> {
    // `JOBID.STEPID` joins that running step's container; otherwise a
    // named container lives for the whole job (the epilog ends it) or
    // after it (kept), an unnamed one for this step.
    if let Some(running) = options.name.as_ref().and_then(|n| step_named(&n.name)) {
        return join_running_step(sp, args, options, user, (job, step), running).map(Some);
    }
    match kept_after_job(args, options) {
        true => step_in_kept_container(sp, args, options, user, (job, step)),
        false => container_for_step(sp, args, options, user, (job, step)),
    }
}

/// What was reached, unless it cannot serve this step.
fn usable(
    reached: Result<Option<KeeperRecord>, String>,
    options: &ContainerOptions,
) -> Result<Option<KeeperRecord>, String> {
    let Some(reply) = reached? else {
        return Ok(None);
    };
    // As in pyxis, a named container keeps the namespaces it was made with.
    if options.unshare_net && !reply.own_network {
        return Err(format!(
            "--container-unshare=net: container {:?} was made without a network namespace of its own (a named container keeps the namespaces it was made with): remove it and make it again with --container-unshare=net",
            options.name.as_ref().map_or("", |n| n.name.as_str())
        ));
    }
    if let Some(failed) = &reply.entrypoint_failed {
        return Err(failed.clone());
    }
    Ok(Some(reply))
}
