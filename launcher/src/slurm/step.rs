//! A Slurm step's container on a node, as the SPANK plugin's helpers
//! (`berth slurm-start`, `berth slurm-join`) make it: the spec built by the
//! one builder for the step's [`Purpose`], a keeper started in the
//! container's cgroup, and the [`KeeperRecord`] the tasks join it by.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::limits::cgroup::ContainerCgroup;
use crate::limits::LimitsError;
use crate::process::keeper::{self, Kept};
use crate::process::RunError;
use crate::spec::build::{
    build_spec, build_spec_for_image, step_view_spec, BuildContext, Built, ContainerRequest,
    Purpose, Registries, SlurmGpus,
};
use crate::spec::{CgroupSpec, SpecError};

use super::record::KeeperRecord;

/// Why a step's container did not start.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Its spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Its cgroup.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// Its keeper.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A named container's files.
    #[error(transparent)]
    Named(#[from] super::named::NamedError),
    /// A named container cannot be used as asked.
    #[error("{0}")]
    NamedRefused(String),
    /// The keeper ended as it started, or the named container is gone.
    #[error("{what} is gone ({source})")]
    Gone {
        /// Which container.
        what: &'static str,
        /// How that showed.
        source: std::io::Error,
    },
}

/// What the plugin tells a helper about the step on this node.
#[derive(Debug, Clone, Default)]
pub struct StepOnNode {
    /// The process whose end ends the container (the step's slurmstepd);
    /// None: the container lives until it is killed (a named container).
    pub watch_pid: Option<i32>,
    /// The step's GPUs as Slurm's global indexes (`SLURM_STEP_GPUS`), or
    /// None when Slurm said nothing.
    pub slurm_gpus: Option<String>,
    /// The cluster's gres.conf; Slurm's other files are beside it.
    pub gres_conf: PathBuf,
    /// This node's name in Slurm.
    pub node_name: String,
    /// The step's slurmstepd: the container's cgroup goes inside its
    /// step's (the job's, for a named container).
    pub stepd_pid: Option<i32>,
    /// The container's name among the node's (`JOB.STEP`, `JOB.name.NAME`).
    pub container_id: String,
    /// The job's partition, for `[limits.partitions.NAME]`.
    pub partition: Option<String>,
    /// Variables whose job value wins over the container's (`--container-env`).
    pub job_env: Vec<String>,
    /// The container outlives the job (a named container's base keeper):
    /// its cgroup goes beside the jobs'.
    pub outlives_job: bool,
    /// Descriptors the keeper closes first: the helper's locks, which a
    /// keeper must not hold once the helper is gone.
    pub keeper_closes: Vec<std::os::fd::RawFd>,
    /// Slurm's own mounts for the step (see `Purpose::slurm_mounts`).
    pub slurm_mounts: Vec<String>,
}

impl StepOnNode {
    /// Slurm's configuration directory (where its gres.conf is).
    fn slurm_conf_dir(&self) -> &Path {
        self.gres_conf.parent().unwrap_or(Path::new("/etc/slurm"))
    }

    fn lifetime(&self) -> super::placement::Lifetime {
        use super::placement::Lifetime;
        match (self.outlives_job, self.watch_pid) {
            (true, _) => Lifetime::Node,
            (false, None) => Lifetime::Job,
            (false, Some(_)) => Lifetime::Step,
        }
    }

    /// How the step's container differs from `berth run`'s.
    pub fn purpose(&self) -> Result<Purpose, SpecError> {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok());
        let (cgroup_path, cgroup_v1_paths) = match self.stepd_pid {
            Some(pid) => {
                use crate::limits::cgroup::{is_v2, V1_CONTROLLERS};
                let text =
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let placement = super::placement::container_cgroups(
                    &text,
                    pid,
                    self.lifetime(),
                    &self.container_id,
                    (!is_v2()).then_some(V1_CONTROLLERS),
                );
                (Some(placement.unified), placement.v1)
            }
            None => (None, Default::default()),
        };
        // The step's GPU list is Slurm's only where Slurm tracks GPUs;
        // elsewhere it came from the user's environment, and the step gets
        // no GPU.
        let slurm_gpus = match self.slurm_gpus.as_deref() {
            None => None,
            Some(list) => Some(SlurmGpus {
                indexes: match list {
                    "" => vec![],
                    _ if !super::files::tracks_gpus(self.slurm_conf_dir()) => {
                        tracing::info!(
                            list,
                            "Slurm does not track GPUs here (GresTypes): none given"
                        );
                        vec![]
                    }
                    list => crate::gpu::parse_list(list)?.unwrap_or_default(),
                },
                gres_conf: self.gres_conf.clone(),
                node: self.node_name.clone(),
            }),
        };
        Ok(Purpose {
            needs_command: false,
            default_hostname: hostname,
            proc_hidepid: true,
            cgroup_path,
            cgroup_v1_paths,
            partition: self.partition.clone(),
            slurm_constrains_devices: std::fs::read_to_string(
                self.slurm_conf_dir().join("cgroup.conf"),
            )
            .is_ok_and(|text| super::placement::constrains_devices(&text)),
            slurm_gpus,
            slurm_job_env: Some(self.job_env.clone()),
            slurm_mounts: self.slurm_mounts.clone(),
            ..Default::default()
        })
    }

    /// Makes the cgroup, starts the keeper in it; the keeper's record with
    /// the cgroup's directories (which outlive the helper: the plugin
    /// removes them with the container).
    fn start_keeper(
        &self,
        kept: Kept,
        cgroup: Option<&CgroupSpec>,
    ) -> Result<KeeperRecord, StepError> {
        let cgroup = cgroup.map(ContainerCgroup::for_spec).transpose()?;
        let pid = keeper::spawn_keeper(
            kept,
            self.watch_pid.map(Pid::from_raw),
            cgroup.as_ref(),
            &self.keeper_closes,
        )?;
        let mut record =
            KeeperRecord::of_keeper(pid.as_raw()).map_err(|source| StepError::Gone {
                what: "the container's keeper",
                source,
            })?;
        record.cgroup_dirs = cgroup.map(ContainerCgroup::keep).unwrap_or_default();
        record.slurm_signals_task_descendants =
            super::files::signals_tasks_and_descendants(self.slurm_conf_dir());
        Ok(record)
    }
}

/// Starts a step's container (`berth slurm-start`): the record its tasks
/// join it by. The layer holds are inherited by the keeper and last as
/// long as it does.
pub fn start_container(
    ctx: &BuildContext,
    registries: &dyn Registries,
    request: &ContainerRequest,
    step: &StepOnNode,
) -> Result<KeeperRecord, StepError> {
    let built = build_spec(ctx, registries, request, &step.purpose()?)?;
    start_built(&built, step)
}

/// Starts the keeper of a built container.
pub(crate) fn start_built(built: &Built, step: &StepOnNode) -> Result<KeeperRecord, StepError> {
    let (spec, image) = (&built.spec, &built.image);
    let tasks = spec.slurm_tasks.clone().unwrap_or_default();
    Ok(KeeperRecord {
        image: image.id.clone(),
        env: spec.process.env.clone(),
        device_env: spec.devices.env.clone(),
        workdir: tasks.workdir.map(|w| w.to_string_lossy().into_owned()),
        remap_root: spec.identity.remap_root,
        own_network: spec.own_network,
        job_env: tasks.job_env,
        entrypoint: image.config.entrypoint.clone().unwrap_or_default(),
        image_workdir: Some(
            image
                .config
                .working_dir
                .clone()
                .filter(|w| w.starts_with('/'))
                .unwrap_or_else(|| "/".into()),
        ),
        seccomp: spec.seccomp_program.as_deref().map(hex::encode),
        root_capabilities: spec.root_capabilities.iter().map(|c| c.index()).collect(),
        ..step.start_keeper(Kept::Container(spec), spec.cgroup.as_ref())?
    })
}

/// Gives a later step its own view into the named container whose keeper
/// is `join` (`berth slurm-join`): the record with this step's keeper,
/// devices, cgroup and task rules (the plugin adds the container's own).
pub fn start_view(
    ctx: &BuildContext,
    join: &KeeperRecord,
    user: &str,
    request: &ContainerRequest,
    step: &StepOnNode,
) -> Result<KeeperRecord, StepError> {
    // First, and checked to be the recorded keeper (pid and start time):
    // a pid reused meanwhile (the container's step ended) is never joined.
    let join: OwnedFd = join.pidfd().map_err(|source| StepError::Gone {
        what: "the named container",
        source,
    })?;
    let view = step_view_spec(ctx, user, request, &step.purpose()?)?;
    Ok(KeeperRecord {
        device_env: view.devices.env.clone(),
        workdir: view
            .tasks
            .workdir
            .as_ref()
            .map(|w| w.to_string_lossy().into_owned()),
        remap_root: view.identity.remap_root,
        job_env: view.tasks.job_env.clone(),
        ..step.start_keeper(
            Kept::StepView {
                join: &join,
                view: &view,
            },
            view.cgroup.as_ref(),
        )?
    })
}

/// What a step does with a named container (pyxis's modes, and berth's
/// `remove`), as written after the name: `NAME:MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMode {
    /// Use it if it exists, else make it (the default).
    Auto,
    /// Make it; it must not exist.
    Create,
    /// Use it; it must exist.
    Exec,
    /// Make it if it does not exist; run nothing in it.
    NoExec,
    /// berth's own: remove the user's container (it must not be in use);
    /// run nothing in it (pyxis users run `enroot remove`).
    Remove,
}

impl NameMode {
    const ALL: [(&'static str, NameMode); 5] = [
        ("auto", NameMode::Auto),
        ("create", NameMode::Create),
        ("exec", NameMode::Exec),
        ("no_exec", NameMode::NoExec),
        ("remove", NameMode::Remove),
    ];

    /// The mode as written after the name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(name, _)| *name)
            .unwrap_or_default()
    }

    /// The mode written `text`.
    pub fn parse(text: &str) -> Option<NameMode> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, m)| *m)
    }
}

/// A step of a named container that outlives its job.
#[derive(Debug, Clone)]
pub struct NamedStep {
    /// The container's name.
    pub name: String,
    /// What the step does with it.
    pub mode: NameMode,
    /// The job's user (whose containers are looked at).
    pub uid: u32,
    /// The step, as `JOB.STEP`.
    pub job: u32,
    /// The step id.
    pub step: u32,
}

/// Starts step `named` in a named container that outlives its job (see
/// `slurm::named`), making the container when it must: the step's own view
/// into the container's running base keeper (started when none runs), or
/// None with `no_exec`. The base is built from the container's recorded
/// image, with no mount or device of any step's.
pub fn start_in_named(
    ctx: &BuildContext,
    registries: &dyn Registries,
    request: &ContainerRequest,
    step: &StepOnNode,
    named: &NamedStep,
) -> Result<Option<KeeperRecord>, StepError> {
    let containers = super::named::NamedContainers::of(ctx.store);
    if named.mode == NameMode::Remove {
        remove_named(&containers, named)?;
        write_summary(&containers, named.uid, &ctx.config.store.summary_dir);
        return Ok(None);
    }
    let held = containers.lock(named.uid, &named.name)?;
    let name = &named.name;
    let record = held.record();
    match (named.mode, &record) {
        (NameMode::Create, Some(_)) => {
            return Err(StepError::NamedRefused(format!(
                "--container-name={name}:create: a container named {name:?} already exists on this node (use it with :auto or :exec, or remove it first: berth rm --container {name})"
            )))
        }
        (NameMode::Exec, None) => {
            return Err(StepError::NamedRefused(format!(
                "--container-name={name}:exec: there is no container named {name:?} on this node (use :auto or :create to make one)"
            )))
        }
        (_, None) if request.image.is_empty() => {
            return Err(StepError::NamedRefused(format!(
                "there is no container named {name:?} on this node yet: give --container-image"
            )))
        }
        _ => {}
    }
    // Neither keeper may hold the container's lock once this helper is gone.
    let step = &StepOnNode {
        keeper_closes: vec![held.lock_fd()],
        ..step.clone()
    };
    let base_step = StepOnNode {
        watch_pid: None,
        outlives_job: true,
        slurm_gpus: Some(String::new()),
        container_id: format!("u{}.{name}", named.uid),
        // The step's are its view's.
        slurm_mounts: vec![],
        ..step.clone()
    };
    // What the base is: the image and who owns its files, nothing of a
    // step's; the namespaces it was made with.
    let base_request = ContainerRequest {
        image: request.image.clone(),
        user: request.user.clone(),
        remap_root: request.remap_root,
        no_network: record
            .as_ref()
            .map_or(request.no_network, |r| r.own_network),
        hostname: request.hostname.clone(),
        env: request.env.clone(),
        ..Default::default()
    };
    let image_of = |record: &super::named::ContainerRecord| {
        record.image.resolve(ctx.store).ok_or_else(|| {
            StepError::NamedRefused(format!(
                "the image of container {name:?} ({}) is no longer in the node's store; remove the container (berth rm --container {name}) and make it again",
                record.image.name
            ))
        })
    };
    let base = match (held.base(), record) {
        // no_exec: made (or kept); nothing runs in it, even while it runs.
        (Some(_), _) if named.mode == NameMode::NoExec => None,
        (Some(base), _) => Some(base),
        (None, Some(_)) if named.mode == NameMode::NoExec => None,
        (None, record) => {
            if let Some((user, _)) = held.users().first() {
                return Err(StepError::NamedRefused(format!(
                    "container {name:?} lost its keeper while step {user} still uses it; try again when that step has ended"
                )));
            }
            // The last mounts of a step just ended go with its processes.
            if !wait_for(std::time::Duration::from_secs(5), || !held.still_mounted()) {
                return Err(StepError::NamedRefused(format!(
                    "container {name:?} is still mounted by a step that is ending; try again in a moment"
                )));
            }
            let purpose = base_step.purpose()?;
            let mut built = match record {
                Some(record) => {
                    build_spec_for_image(ctx, &base_request, &purpose, image_of(&record)?)?
                }
                None => {
                    let kept = containers.list(Some(named.uid)).len();
                    let most = ctx.config.store.container_max_count;
                    if kept >= most {
                        return Err(StepError::NamedRefused(format!(
                            "--container-name={name}: you keep {kept} named containers on this node, the most allowed (store.container_max_count = {most}): reuse one (berth ps lists them) or have one removed"
                        )));
                    }
                    let built = build_spec(ctx, registries, &base_request, &purpose)?;
                    if built.image.layer_digests.is_empty() {
                        return Err(StepError::NamedRefused(format!(
                            "--container-name={name}: a directory image cannot back a container kept after the job; import it first (berth import) or use a squashfs file"
                        )));
                    }
                    let size = slurm_conf::parse_size(&ctx.config.store.container_max_size)
                        .map_err(|e| {
                            SpecError::Invalid(format!("store.container_max_size: {e}"))
                        })?;
                    held.create(
                        image_record(&built.image, &request.image),
                        size,
                        Some(named.job),
                        request.no_network,
                    )?;
                    built
                }
            };
            if named.mode == NameMode::NoExec {
                None
            } else {
                mount_writable_layer(&held, &mut built)?;
                let base = start_built(&built, &base_step)?;
                held.set_base(&base)?;
                Some(base)
            }
        }
    };
    held.touch(Some(named.job))?;
    let Some(base) = base else {
        drop(held);
        write_summary(&containers, named.uid, &ctx.config.store.summary_dir);
        return Ok(None); // no_exec: made (or kept); nothing runs in it
    };
    let user = request.user.clone().unwrap_or_default();
    let view = match start_view(ctx, &base, &user, request, step) {
        Ok(view) => view,
        Err(e) => {
            held.end_if_unused();
            return Err(e);
        }
    };
    held.add_user(named.job, named.step, &view)?;
    write_summary(&containers, named.uid, &ctx.config.store.summary_dir);
    Ok(Some(base.seen_from(&view, named.step)))
}

/// Readies and mounts `held`'s writable layer (see `prepare_layer`) as
/// the upper layer of the container `built` will start.
pub(crate) fn mount_writable_layer(
    held: &super::named::NamedContainer,
    built: &mut Built,
) -> Result<(), StepError> {
    held.prepare_layer()?;
    let layer = crate::sys::mount_ext4_image(&held.layer_file()).map_err(|source| {
        StepError::NamedRefused(format!(
            "cannot mount the writable layer of container {:?} ({}): {source}",
            held.name,
            held.layer_file().display()
        ))
    })?;
    built.spec.disk_layer = Some(std::sync::Arc::new(layer));
    Ok(())
}

/// `NAME:remove`: removes the user's container NAME, whose keeper is
/// stopped first if no step uses it (a step of this job may have left it
/// running for the job's later steps).
fn remove_named(
    containers: &super::named::NamedContainers,
    named: &NamedStep,
) -> Result<(), StepError> {
    let name = &named.name;
    let missing = || {
        StepError::NamedRefused(format!(
            "--container-name={name}:remove: there is no container named {name:?} of yours on this node"
        ))
    };
    if !containers.exists(named.uid, name) {
        return Err(missing());
    }
    let held = containers.lock(named.uid, name)?;
    if held.record().is_none() {
        return Err(missing());
    }
    held.end_if_unused();
    // The last mounts of the keeper just ended go with it.
    wait_for(std::time::Duration::from_secs(5), || !held.still_mounted());
    held.remove()?;
    Ok(())
}

/// Refreshes the user's summary of their containers (`berth ps`); a
/// failure only costs them an out-of-date list.
fn write_summary(containers: &super::named::NamedContainers, uid: u32, dir: &Path) {
    if let Err(e) = containers.write_summary(uid, dir) {
        tracing::warn!(
            "cannot write the summary of uid {uid}'s containers in {}: {e}",
            dir.display()
        );
    }
}

/// Ends the base keepers of `uid`'s named containers no step uses any
/// more (job `job`'s epilog: only those that job was the last to use, so
/// that another job of the user between its steps keeps its own): what
/// each ending found. One whose lock another helper holds is left to it
/// (a step is starting in it).
pub fn leave_named(
    store: &crate::image::Store,
    uid: u32,
    job: Option<u32>,
    summary_dir: &Path,
) -> Vec<(String, super::record::Ended)> {
    let containers = super::named::NamedContainers::of(store);
    let ended = containers
        .list(Some(uid))
        .into_iter()
        .filter(|listed| listed.steps.is_empty())
        .filter(|listed| job.is_none() || listed.record.last_job == job)
        .filter_map(|listed| {
            let held = containers.try_lock(uid, &listed.record.name).ok()??;
            Some((listed.record.name, held.end_if_unused()?))
        })
        .collect();
    write_summary(&containers, uid, summary_dir);
    ended
}

/// Polls `done` every 50 ms for up to `limit`: whether it came true.
pub(crate) fn wait_for(limit: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// The record a named container keeps of its image.
pub(crate) fn image_record(
    image: &crate::image::ResolvedImage,
    asked: &str,
) -> crate::image::records::ImageRecord {
    crate::image::records::ImageRecord {
        name: asked.to_string(),
        source: "named-container".into(),
        id: image.id.clone(),
        manifest_digest: None,
        layers: image.layer_digests.clone(),
        config: image.config.clone(),
        created: crate::image::records::now(),
        public: false,
        pulled_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_in(conf_dir: &Path, gpus: &str) -> StepOnNode {
        StepOnNode {
            slurm_gpus: Some(gpus.to_string()),
            gres_conf: conf_dir.join("gres.conf"),
            node_name: "n1".into(),
            ..Default::default()
        }
    }

    /// Where Slurm does not track GPUs, `SLURM_STEP_GPUS` is the user's own
    /// (srun passes its environment on): it must give no GPU.
    #[test]
    fn a_gpu_list_counts_only_where_slurm_tracks_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let gpus = |step: &StepOnNode| step.purpose().unwrap().slurm_gpus.unwrap().indexes;
        std::fs::write(dir.path().join("slurm.conf"), "NodeName=n1 CPUs=2\n").unwrap();
        assert_eq!(gpus(&step_in(dir.path(), "0,1")), Vec::<u32>::new());
        std::fs::write(
            dir.path().join("slurm.conf"),
            "GresTypes=gpu\nNodeName=n1 Gres=gpu:2\n",
        )
        .unwrap();
        assert_eq!(gpus(&step_in(dir.path(), "0,1")), vec![0, 1]);
        assert_eq!(gpus(&step_in(dir.path(), "")), Vec::<u32>::new());
        let purpose = step_in(dir.path(), "1").purpose().unwrap();
        let slurm = purpose.slurm_gpus.unwrap();
        assert_eq!(
            (slurm.node.as_str(), slurm.gres_conf),
            ("n1", dir.path().join("gres.conf"))
        );
    }
}
