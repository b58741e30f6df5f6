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
    build_spec, step_view_spec, BuildContext, ContainerRequest, Purpose, Registries, SlurmGpus,
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
}

impl StepOnNode {
    /// Slurm's configuration directory (where its gres.conf is).
    fn slurm_conf_dir(&self) -> &Path {
        self.gres_conf.parent().unwrap_or(Path::new("/etc/slurm"))
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
                    self.watch_pid.is_none(),
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
        let pid = keeper::spawn_keeper(kept, self.watch_pid.map(Pid::from_raw), cgroup.as_ref())?;
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
    let (spec, image) = (&built.spec, &built.image);
    let tasks = spec.slurm_tasks.clone().unwrap_or_default();
    Ok(KeeperRecord {
        image: image.id.clone(),
        env: spec.process.env.clone(),
        device_env: spec.devices.env.clone(),
        workdir: tasks.workdir.map(|w| w.to_string_lossy().into_owned()),
        remap_root: spec.identity.remap_root,
        job_env: tasks.job_env,
        entrypoint: image.config.entrypoint.clone().unwrap_or_default(),
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
