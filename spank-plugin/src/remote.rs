//! slurmstepd's side: the first task of a step on a node has the `berth`
//! binary start the step's container keeper; every task joins the keeper's
//! namespaces, takes the image's environment, forks into its pid namespace
//! (`relay`), and before exec sets no_new_privs and the seccomp filter. The step's exit hook (or the job
//! epilog, if slurmstepd was killed) ends the keeper.
//!
//! Per-step state lives in `<runtime_dir>/slurm/<job>.<step>/` (root only):
//! `lock` (flock: one task creates the container, the others wait) and
//! `keeper.json` (the helper's answer). Named containers: `named.rs`.

use std::fs;
use std::path::Path;
use std::process::Command;

use slurm_conf::plugstack::PlugstackArgs;

use berth::process::confine::{Confinement, Filter};
use berth::slurm::record::KeeperRecord;
use berth::spec::process::task_environment;

use crate::helper::{for_the_scripts_steps, save_target};
use crate::named::{kept_after_job, leave_kept_containers};
use crate::options::ContainerOptions;
use crate::state::{container_dir, live_keeper, recorded_keeper, step_dir};
use crate::{ffi, with_state};
use berth::process::join::{
    enter_container, enter_remapped_user_namespace, remapped_user_namespace,
};

/// What a task keeps between its privileged and its user hook.
pub struct Joined {
    seccomp: Option<Vec<u8>>,
    /// With --container-remap-root: the job's ids, which root inside the
    /// task's own user namespace is mapped to.
    remap_root: Option<std::os::fd::OwnedFd>,
    /// The capabilities the task keeps: remapped, root's configured ones
    /// (inside its user namespace only); otherwise none.
    capabilities: berth::caps::CapsHashSet,
    /// Where the task starts (Slurm's own chdir to the job's directory
    /// comes after the privileged hook), and whether the user named it.
    workdir: Option<(String, bool)>,
    /// Which signals the task's relay passes on (see `relay`).
    forwarding: crate::relay::Forwarding,
    /// The `PMIX_MCA_*` variables the job set itself (Slurm's PMIx
    /// server's modules replace the others, the image's included).
    job_pmix_mca: Vec<String>,
}

/// The PMIx client's module variables and Slurm's server's.
const PMIX_MODULES: [(&str, &str); 3] = [
    ("PMIX_MCA_ptl", "PMIX_PTL_MODULE"),
    ("PMIX_MCA_psec", "PMIX_SECURITY_MODE"),
    ("PMIX_MCA_gds", "PMIX_GDS_MODULE"),
];

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
    let Some(reply) =
        crate::start::container_of_step(sp, &args, &options, (uid, gid), (job, step))?
    else {
        return Ok(()); // no_exec: the tasks run outside it
    };
    // With --container-remap-root the task later becomes root of a user
    // namespace of its own, made now (it needs the host's /proc).
    let remap_root = match reply.remap_root {
        true => Some(remapped_user_namespace(uid, gid)?),
        false => None,
    };
    enter_container(&reply)?;

    // The container's environment, except what the job owns (Slurm's,
    // MPI's, the GPU allocation, TERM and --container-env's variables,
    // where the job has them), then what its devices need, which wins over
    // the job's values (the container counts its GPUs from 0:
    // CUDA_VISIBLE_DEVICES); the job's locale goes (see `task_environment`).
    let job_names = ffi::job_env_names(sp);
    let job_pmix_mca: Vec<String> = PMIX_MODULES
        .iter()
        .map(|(client, _)| client.to_string())
        .filter(|client| job_names.contains(client))
        .collect();
    // With --container-entrypoint, the environment the entrypoint left.
    let container_env = reply.entrypoint_env.as_ref().unwrap_or(&reply.env);
    let env = task_environment(container_env, &reply.device_env, &reply.job_env, &job_names);
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
    // Remapped, the capabilities the task may hold in its user namespace
    // must stay in the bounding set (they mean nothing outside it).
    let capabilities = task_capabilities(&reply);
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
    let workdir = Some(task_workdir(&reply, &options));
    with_state(|s| {
        s.joined = Some(Joined {
            seccomp,
            remap_root,
            capabilities,
            workdir,
            forwarding: crate::relay::Forwarding {
                stepd_reaches_child: reply.slurm_signals_task_descendants,
            },
            job_pmix_mca,
        })
    });
    Ok(())
}

/// The capabilities a task keeps: remapped, root's configured ones
/// (inside its own user namespace only); otherwise none.
pub(crate) fn task_capabilities(reply: &KeeperRecord) -> berth::caps::CapsHashSet {
    match reply.remap_root {
        true => reply
            .root_capabilities
            .iter()
            .filter_map(|i| berth::caps::from_index(*i))
            .collect(),
        false => Default::default(),
    }
}

/// Where a task starts, as in pyxis: the image's working directory (else
/// "/"; with --container-entrypoint, where the entrypoint left it), or
/// --container-workdir, a relative one taken from the image's;
/// and whether the user named it (one that does not exist then fails the
/// task).
pub(crate) fn task_workdir(reply: &KeeperRecord, options: &ContainerOptions) -> (String, bool) {
    let image_workdir = reply.image_workdir.clone().unwrap_or_else(|| "/".into());
    if let (None, Some(dir)) = (&options.workdir, &reply.entrypoint_workdir) {
        return (dir.clone(), false);
    }
    match &options.workdir {
        Some(dir) => (
            Path::new(&image_workdir)
                .join(dir)
                .to_string_lossy()
                .into_owned(),
            true,
        ),
        None => (image_workdir, false),
    }
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
    // Slurm's PMIx server's modules, for a PMIx client in the image that
    // may choose others (as enroot's PMIx hook does; variables Slurm sets
    // only now, after the privileged hook).
    for (client, server) in PMIX_MODULES {
        if let Some(value) = ffi::getenv(sp, server) {
            let jobs_own = joined.job_pmix_mca.iter().any(|n| n == client);
            ffi::setenv(sp, client, &value, !jobs_own);
        }
    }
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
    // Remapped, the task is root of a user namespace of its own, with the
    // configured capabilities there; otherwise it has none (Slurm's setuid).
    if let Some(userns) = &joined.remap_root {
        enter_remapped_user_namespace(userns)?;
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
    remove_step(&args, &step_dir(&args, job, step));
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
            remove_step(args, &entry.path());
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

fn remove_step(args: &PlugstackArgs, dir: &Path) {
    if let Some(reply) = recorded_keeper(dir) {
        // The state directory is `JOB.STEP` or `JOB.name.NAME`.
        let job = dir
            .file_name()
            .and_then(|n| n.to_str()?.split('.').next()?.parse().ok());
        let exit = with_state(|s| s.tasks_exit);
        end_container(args, &reply, job, exit);
    }
    let _ = fs::remove_dir_all(dir);
}

/// Ends a container's keeper (of job `job`) and removes its cgroup,
/// telling the user of an out-of-memory kill or a cgroup left behind, and
/// the audit trail of the end (with its tasks' highest exit status, when
/// this slurmstepd saw them end).
pub(crate) fn end_container(
    args: &PlugstackArgs,
    record: &KeeperRecord,
    job: Option<u32>,
    exit: Option<i32>,
) {
    let ended = record.end();
    if record.pid > 0 {
        let audit = match slurm_conf::Config::load(&args.config, false) {
            Ok(config) => config.audit,
            Err(e) => {
                use berth::audit::{syslog, Severity};
                syslog(Severity::Error, &format!("berth-audit: {e}"));
                Default::default()
            }
        };
        berth::audit::slurm_container_ended(&audit, record, job, exit, ended.oom_kills);
    }
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
