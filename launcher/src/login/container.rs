//! A login user's container: the named container `login` of their uid in
//! the node's store (see `slurm::named`), so it has the same parts as a
//! Slurm job's kept container: a writable layer on disk (an ext4 file)
//! that survives logouts and reboots, at most one running keeper, and a
//! record per process using it (`users/login-PID.json`, one per session).
//! Unlike a Slurm step, a session needs no view of its own: the keeper
//! holds everything (the user's mounts and GPUs), and sessions join it.

use std::os::fd::RawFd;
use std::path::Path;

use crate::audit;
use crate::image::Store;
use crate::slurm::named::{NamedContainer, NamedContainers, NamedError};
use crate::slurm::record::KeeperRecord;
use crate::slurm::step::{
    image_record, mount_writable_layer, start_built, wait_for, StepError, StepOnNode,
};
use crate::spec::build::{build_spec, build_spec_for_image, BuildContext, Registries};
use crate::spec::SpecError;

use super::LoginPlan;

/// The name of every login user's container.
pub const CONTAINER_NAME: &str = "login";

/// A login user's container, locked, with its keeper running.
pub struct Running {
    /// The container (locked until this is dropped).
    pub held: NamedContainer,
    /// Its keeper.
    pub base: KeeperRecord,
}

/// Starts `plan`'s container unless its keeper runs (making it on first
/// use), and returns it locked: the caller records its session before
/// another may stop it. The keeper closes `session_fds` first (the
/// session's descriptors and connection, which would otherwise stay open
/// for as long as the container runs: sshd waits for their end).
pub fn start_or_join(
    ctx: &BuildContext,
    registries: &dyn Registries,
    plan: &LoginPlan,
    session_fds: &[RawFd],
) -> Result<Running, StepError> {
    let containers = NamedContainers::of(ctx.store);
    let uid = plan.user.uid.as_raw();
    let held = containers.lock(uid, CONTAINER_NAME)?;
    if let Some(base) = held.base() {
        return Ok(Running { held, base });
    }
    // The mounts of a keeper just ended go with its last processes.
    if !wait_for(std::time::Duration::from_secs(5), || !held.still_mounted()) {
        return Err(StepError::NamedRefused(
            "your container is still stopping; log in again in a moment".into(),
        ));
    }
    let request = plan.request();
    let purpose = plan.purpose(&ctx.config.limits.cgroup_parent);
    let audit_failed = |e: &StepError| {
        let mut record = audit::Record::new(
            audit::Event::StartFailed,
            audit::Origin::Login,
            uid,
            &plan.image,
        );
        record.reason = Some(e.to_string());
        audit::record(&ctx.config.audit, &record);
    };
    let mut built = match held.record() {
        Some(record) => {
            let image = record.image.resolve(ctx.store).ok_or_else(|| {
                StepError::NamedRefused(format!(
                    "the image of your container ({}) is no longer in the node's store: ask the admins to reset it (berth rm --container {CONTAINER_NAME} --user {})",
                    record.image.name, plan.user.name
                ))
            });
            image.and_then(|image| Ok(build_spec_for_image(ctx, &request, &purpose, image)?))
        }
        None => make(ctx, registries, plan, &held),
    }
    .inspect_err(audit_failed)?;
    let started = (|| {
        mount_writable_layer(&held, &mut built)?;
        let node = StepOnNode {
            outlives_job: true,
            container_id: format!("{CONTAINER_NAME}-{uid}"),
            keeper_closes: [held.lock_fd()]
                .iter()
                .chain(session_fds)
                .copied()
                .collect(),
            ..Default::default()
        };
        let mut base = start_built(&built, &node)?;
        base.uid = uid;
        held.set_base(&base)?;
        Ok(base)
    })()
    .inspect_err(audit_failed)?;
    audit::record(
        &ctx.config.audit,
        &audit::Record {
            pid: Some(started.pid),
            ..audit::Record::new(audit::Event::Start, audit::Origin::Login, uid, &plan.image)
                .with_image(ctx.store, &built.image.id)
                .with_spec(&built.spec)
        },
    );
    held.touch(None)?;
    Ok(Running {
        held,
        base: started,
    })
}

/// Makes `plan`'s container on the user's first login: its image pulled
/// (or found) and its writable layer made.
fn make(
    ctx: &BuildContext,
    registries: &dyn Registries,
    plan: &LoginPlan,
    held: &NamedContainer,
) -> Result<crate::spec::build::Built, StepError> {
    let built = build_spec(
        ctx,
        registries,
        &plan.request(),
        &plan.purpose(&ctx.config.limits.cgroup_parent),
    )?;
    if built.image.layer_digests.is_empty() {
        return Err(StepError::NamedRefused(format!(
            "[login] image {}: a directory image cannot back a kept container; import it first (berth import) or use a squashfs file",
            plan.image
        )));
    }
    let size = slurm_conf::parse_size(&ctx.config.store.container_max_size)
        .map_err(|e| SpecError::Invalid(format!("store.container_max_size: {e}")))?;
    held.create(image_record(&built.image, &plan.image), size, None, false)?;
    Ok(built)
}

/// Records session process `session` (its pid and start time) as using
/// the container: no idle stop while it lives.
pub fn add_session(held: &NamedContainer, session: &KeeperRecord) -> Result<(), NamedError> {
    held.add_process(&format!("login-{}", session.pid), session)
}

/// A session ended: its record goes, and the container's idle time
/// starts now.
pub fn end_session(store: &Store, uid: u32, session: i32) {
    let containers = NamedContainers::of(store);
    if let Ok(held) = containers.lock(uid, CONTAINER_NAME) {
        held.remove_process(&format!("login-{session}"));
        let _ = held.touch(None);
    }
}

/// Stops the login containers no session (or Slurm step) has used for
/// `idle_stop` seconds; what each stop found goes to the audit trail.
pub fn stop_idle(store: &Store, config: &slurm_conf::Config, summary_dir: &Path) {
    let containers = NamedContainers::of(store);
    let now = crate::image::records::now();
    for uid in containers.uids() {
        if !containers.exists(uid, CONTAINER_NAME) {
            continue;
        }
        // A container being started or joined is left to that.
        let Ok(Some(held)) = containers.try_lock(uid, CONTAINER_NAME) else {
            continue;
        };
        let Some(base) = held.base() else { continue };
        let idle_since = held.record().map_or(0, |r| r.last_used);
        let idle_stop = slurm_conf::parse_duration(&config.login.idle_stop).unwrap_or(600);
        // Whole seconds: at least `idle_stop`, at most one more.
        if !held.users().is_empty() || now <= idle_since + idle_stop {
            continue;
        }
        if let Some(ended) = held.end_if_unused() {
            tracing::info!(uid, "stopped an idle login container");
            container_ended(config, &base, ended.oom_kills);
        }
        let _ = containers.write_summary(uid, summary_dir);
    }
}

/// The audit record of a login container's end.
pub fn container_ended(config: &slurm_conf::Config, base: &KeeperRecord, oom_kills: u64) {
    audit::record(
        &config.audit,
        &audit::Record {
            image_id: Some(base.image.clone()),
            pid: Some(base.pid),
            duration_ms: base.running_for().map(|d| d.as_millis() as u64),
            reason: (oom_kills > 0).then(|| format!("{oom_kills} out-of-memory kills")),
            ..audit::Record::new(audit::Event::End, audit::Origin::Login, base.uid, "")
        },
    );
}
