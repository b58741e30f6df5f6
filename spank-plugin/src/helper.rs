//! Running `berth`'s helpers for a step, as root: `slurm-start` (the
//! step's container keeper) and `slurm-join` (a later step's own view into
//! a named container). Each answers with one JSON line; a failure's last
//! line is what srun shows.

use std::path::{Path, PathBuf};
use std::process::Command;

use slurm_conf::plugstack::PlugstackArgs;

use berth::mounts::{MountRequest, MountSpec};
use berth::slurm::record::KeeperRecord;

use crate::ffi;
use crate::options::ContainerOptions;
use crate::state::{live_keeper, make_state_dir, record_keeper, step_dir};

/// The `berth` helper (`slurm-start` or `slurm-join`) with what both are told
/// about the step: its slurmstepd, cgroup, partition, user, GPUs and mounts.
#[allow(clippy::too_many_arguments)]
fn helper_command(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
    verb: &str,
    (uid, gid): (u32, u32),
    tied_to_step: bool,
    container_id: &str,
    job_dir: Option<&JobDir>,
) -> Result<Command, String> {
    let mut cmd = Command::new(&args.berth);
    cmd.arg("--config-if-present")
        .arg(&args.config)
        .arg("-q")
        .arg(verb);
    let stepd = nix::unistd::getppid().to_string();
    if tied_to_step {
        cmd.arg("--watch-pid").arg(&stepd);
    }
    // The container's cgroup goes in the step's (the job's when named).
    cmd.arg("--stepd-pid")
        .arg(&stepd)
        .arg("--container-id")
        .arg(container_id);
    if let Some(partition) = ffi::getenv(sp, "SLURM_JOB_PARTITION") {
        cmd.arg("--partition").arg(partition);
    }
    cmd.arg("--user").arg(format!("{uid}:{gid}"));
    // The GPUs Slurm gave this step (the batch step: the job's).
    let gpus_var = if ffi::step_id(sp) == Some(ffi::BATCH_STEP) {
        "SLURM_JOB_GPUS"
    } else {
        "SLURM_STEP_GPUS"
    };
    cmd.arg("--slurm-gpus")
        .arg(ffi::getenv(sp, gpus_var).unwrap_or_default());
    // slurmstepd's own SLURM_CONF says where the cluster's config is.
    cmd.arg("--gres-conf").arg(berth::gpu::gres::conf_path());
    // slurmstepd's own environment names its node (it sets SLURMD_NODENAME
    // for itself at start); the job's environment is the user's until
    // Slurm sets the task's variables, after this hook.
    let node = std::env::var("SLURMD_NODENAME").ok();
    if let Some(node) = &node {
        cmd.arg("--node-name").arg(node);
    }
    // Slurm's own files the step's tasks need: the batch script (in the
    // spool directory), the PMIx server's directory (its socket and
    // shared memory: `PMIX_SERVER_TMPDIR`, set after this hook).
    if ffi::step_id(sp) == Some(ffi::BATCH_STEP) {
        if let Some(script) = ffi::job_argv(sp)
            .into_iter()
            .next()
            .filter(|s| s.starts_with('/'))
        {
            cmd.arg("--slurm-mount")
                .arg(format!("{script}:{script}:ro"));
        }
    }
    for dir in pmix_dirs(sp, node.as_deref(), uid) {
        cmd.arg("--slurm-mount")
            .arg(format!("{0}:{0}", dir.display()));
    }
    for mount in &options.mounts {
        cmd.arg("--mount").arg(mount_from_job_dir(mount, job_dir)?);
    }
    if let Some(mount) = home_mount(options, uid) {
        cmd.arg("--mount").arg(mount);
    }
    // The task rules go into the container's spec and come back in its
    // record: remap-root and the variables whose job value wins (the
    // working directory is the task's own business: see remote.rs).
    if options.remap_root.is_on() {
        cmd.arg("--remap-root");
    }
    // A step's own: a kept container's base takes none of it, the step's
    // view into it does.
    if options.read_only.is_on() {
        cmd.arg("--read-only");
    }
    if !options.env_names.is_empty() {
        cmd.arg("--job-env").arg(options.env_names.join(","));
    }
    // Relative paths were made absolute from the job's directory (above,
    // and the image in `start_keeper`): the helper needs no working
    // directory of the user's, which may not exist on this node (a submit
    // directory compute nodes do not mount) or not be root's to enter. It
    // runs in an empty directory of root's, so that a bare image name is
    // never found as a file there (berth takes a name that exists as a
    // path for a path): `team/app` is a registry reference, not `/tmp`'s
    // `team/app` or the job directory's.
    cmd.current_dir(empty_dir(args))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root");
    Ok(cmd)
}

/// `--container-mount-home`: the user's home (from passwd: never the
/// step's `HOME`, which in a batch script's step may be the image's) at the
/// same path, or at `/root` with `--container-remap-root` (where a remapped
/// root's HOME is), as pyxis puts it. The source is opened with the user's
/// rights like any mount source.
fn home_mount(options: &ContainerOptions, uid: u32) -> Option<String> {
    if !options.mount_home.is_on() {
        return None;
    }
    let home = nix::unistd::User::from_uid(uid.into()).ok().flatten()?.dir;
    let target = match options.remap_root.is_on() {
        true => PathBuf::from("/root"),
        false => home.clone(),
    };
    Some(
        MountSpec {
            source: home.to_string_lossy().into_owned(),
            destination: target,
            read_only: false,
            flags: vec![],
        }
        .to_string(),
    )
}

/// `<runtime_dir>/empty`, made when missing (root's, empty, read-only);
/// "/" if it cannot be.
fn empty_dir(args: &PlugstackArgs) -> std::path::PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = args.runtime_dir.join("empty");
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o555)
        .create(&dir);
    match std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
        true => dir,
        false => "/".into(),
    }
}

/// Where relative image and mount paths of the user's are found.
#[derive(Debug, PartialEq)]
enum JobDir {
    /// The task's directory: where Slurm runs it (`srun -D`, the submit directory).
    At(PathBuf),
    /// The job's directory does not exist on this node and Slurm fell back
    /// to /tmp, which anyone may write to: relative paths are refused.
    Missing,
}

impl JobDir {
    /// Read in task_init_privileged: the task's working directory is then
    /// already the one Slurm chose for it (as the user: it falls back to
    /// /tmp when that fails), except under job_container/tmpfs, which leaves
    /// the task in "/" until later; then the job's `PWD` says.
    fn of_task(cwd: Option<PathBuf>, pwd: Option<String>) -> Option<JobDir> {
        let pwd = pwd.map(PathBuf::from).filter(|p| p.is_absolute());
        match cwd {
            Some(cwd) if cwd == Path::new("/tmp") && pwd.as_deref() != Some(Path::new("/tmp")) => {
                Some(JobDir::Missing)
            }
            Some(cwd) if cwd != Path::new("/") => Some(JobDir::At(cwd)),
            _ => pwd.map(JobDir::At),
        }
    }
}

fn job_dir(sp: ffi::spank_t) -> Option<JobDir> {
    JobDir::of_task(std::env::current_dir().ok(), ffi::getenv(sp, "PWD"))
}

/// `path` as the user meant it: relative ones from the job's directory.
fn from_job_dir(path: &str, job_dir: Option<&JobDir>, what: &str) -> Result<String, String> {
    if Path::new(path).is_absolute() {
        return Ok(path.to_string());
    }
    match job_dir {
        Some(JobDir::At(dir)) => Ok(dir.join(path).to_string_lossy().into_owned()),
        Some(JobDir::Missing) => Err(format!(
            "{what} {path}: a relative path, but the job's directory does not exist on this node (Slurm runs the tasks in /tmp instead): give an absolute path"
        )),
        None => Err(format!(
            "{what} {path}: a relative path, but the job has no working directory to find it from: give an absolute path"
        )),
    }
}

/// The batch step's options as its script's srun steps inherit them:
/// relative image, mount and save paths made absolute from the job's
/// directory (the script itself starts in the image's), `:create` as a
/// plain name, and no name at all for `:remove`.
pub(crate) fn for_the_scripts_steps(
    sp: ffi::spank_t,
    options: &ContainerOptions,
) -> ContainerOptions {
    inherited_options(options, job_dir(sp).as_ref(), ffi::getenv(sp, "PWD"))
}

/// [`for_the_scripts_steps`] with the job's directory and `PWD` given.
fn inherited_options(
    options: &ContainerOptions,
    job_dir: Option<&JobDir>,
    pwd: Option<String>,
) -> ContainerOptions {
    use crate::options::NameMode;
    let mut inherited = options.clone();
    if let Some(image) = inherited.image.as_mut() {
        if berth::image::written_as_path(image) {
            if let Ok(absolute) = from_job_dir(image, job_dir, "--container-image") {
                *image = absolute;
            }
        }
    }
    for mount in &mut inherited.mounts {
        if let MountRequest::Bind(bind) = mount {
            if let Ok(source) = from_job_dir(&bind.source, job_dir, "--container-mounts") {
                bind.source = source;
            }
        }
    }
    if let Some(save) = inherited.save.as_mut() {
        if let Ok(absolute) = save_from(save, pwd) {
            *save = absolute;
        }
    }
    match inherited.name.as_ref().map(|n| n.mode) {
        Some(NameMode::Create) => {
            if let Some(name) = inherited.name.as_mut() {
                name.mode = NameMode::Auto;
            }
        }
        Some(NameMode::Remove) => inherited.name = None,
        _ => {}
    }
    inherited
}

/// `--container-save`'s file as the user meant it: a relative one from the
/// job's directory as the job's `PWD` names it (read the same way when the
/// step starts and when it ends, where slurmstepd's own directory says
/// nothing). The file is written with the user's rights.
pub(crate) fn save_target(sp: ffi::spank_t, path: &Path) -> Result<PathBuf, String> {
    save_from(path, ffi::getenv(sp, "PWD"))
}

/// [`save_target`] with the job's `PWD` given.
fn save_from(path: &Path, pwd: Option<String>) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match pwd.filter(|p| p.starts_with('/')) {
        Some(dir) => Ok(Path::new(&dir).join(path)),
        None => Err(format!(
            "--container-save {}: a relative path, but the job has no working directory to find it from: give an absolute path",
            path.display()
        )),
    }
}

/// A `--container-mounts` item, written for the helper's `--mount` with a
/// relative bind source made absolute.
fn mount_from_job_dir(mount: &MountRequest, job_dir: Option<&JobDir>) -> Result<String, String> {
    Ok(match mount {
        MountRequest::Bind(bind) => MountSpec {
            source: from_job_dir(&bind.source, job_dir, "--container-mounts")?,
            ..bind.clone()
        }
        .to_string(),
        other => other.to_string(),
    })
}

/// Runs a helper; its JSON answer, or its last error line.
fn run_helper(mut cmd: Command, args: &PlugstackArgs) -> Result<KeeperRecord, String> {
    let out = cmd.output().map_err(|e| match args.berth.exists() {
        true => format!("cannot run {}: {e}", args.berth.display()),
        false => format!(
            "cannot run {}: {e} (is berth installed on this node? plugstack.conf's berth= names it)",
            args.berth.display()
        ),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("the container could not be started");
        return Err(line.trim_start_matches("berth: ").to_string());
    }
    KeeperRecord::from_line(&out.stdout)
        .map_err(|e| format!("cannot use the answer of {}: {e}", args.berth.display()))
}

/// What `berth slurm-start` makes for the step.
pub(crate) enum Start<'a> {
    /// A container of its own (or the job's named one): tied to the
    /// step's slurmstepd or not, under this name among the node's.
    Own {
        tied_to_step: bool,
        container_id: &'a str,
    },
    /// Its own view into the named container kept after the job (made or
    /// started when it must); a record of no keeper (pid 0) with `no_exec`.
    Kept {
        name: &'a crate::options::ContainerName,
        job: u32,
        step: u32,
    },
}

/// Runs `berth slurm-start` for the step: `image` (None: a kept
/// container's recorded one) as the user meant it.
pub(crate) fn run_slurm_start(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
    image: Option<&str>,
    user: (u32, u32),
    start: Start,
) -> Result<KeeperRecord, String> {
    // Where relative paths of the user's are found, read once.
    let job_dir = job_dir(sp);
    let (tied_to_step, container_id) = match &start {
        Start::Own {
            tied_to_step,
            container_id,
        } => (*tied_to_step, container_id.to_string()),
        Start::Kept { job, step, .. } => (true, format!("{job}.{step}")),
    };
    let mut cmd = helper_command(
        sp,
        args,
        options,
        "slurm-start",
        user,
        tied_to_step,
        &container_id,
        job_dir.as_ref(),
    )?;
    if options.unshare_net {
        cmd.arg("--network").arg("none");
    }
    if let Start::Kept { name, job, step } = start {
        cmd.arg("--named")
            .arg(&name.name)
            .arg("--name-mode")
            .arg(name.mode.as_str())
            .arg("--job")
            .arg(job.to_string())
            .arg("--step-id")
            .arg(step.to_string());
    }
    // Only a name written as a path is one (as in pyxis): `ubuntu` is a
    // registry reference, `./ubuntu` the job directory's.
    let image = match image {
        Some(image) if berth::image::written_as_path(image) => {
            from_job_dir(image, job_dir.as_ref(), "--container-image")?
        }
        Some(image) => image.to_string(),
        // The kept container's recorded image, if it exists.
        None => String::new(),
    };
    cmd.arg(image);
    run_helper(cmd, args)
}

/// With `--mpi=pmix` (`SLURM_MPI_TYPE=pmix...`) in a step Slurm serves
/// with PMIx (not the batch step): the directories Slurm's PMIx plugin
/// serves the step's ranks from on this node (made before the tasks are
/// forked; see `berth::slurm::files::pmix_dirs`), to be bound into the
/// container at the same paths. None otherwise.
fn pmix_dirs(sp: ffi::spank_t, node: Option<&str>, uid: u32) -> Vec<PathBuf> {
    let Some(mpi) = ffi::getenv(sp, "SLURM_MPI_TYPE").filter(|m| m.starts_with("pmix")) else {
        return vec![];
    };
    let (Some(job), Some(step)) = (ffi::job_id(sp), ffi::step_id(sp)) else {
        return vec![];
    };
    if step == ffi::BATCH_STEP {
        return vec![];
    }
    // A heterogeneous job's components share its directories. The job's
    // environment may say anything: only the user's own directories count.
    let job = ffi::getenv(sp, "SLURM_HET_JOB_ID")
        .and_then(|j| j.parse().ok())
        .unwrap_or(job);
    let conf = berth::slurm::files::path("slurm.conf");
    let conf_dir = conf.parent().unwrap_or(Path::new("/etc/slurm"));
    let pmix = berth::slurm::files::PmixStep {
        node: node.unwrap_or_default(),
        uid,
        job,
        step,
        client_base: ffi::getenv(sp, "SLURM_PMIX_TMPDIR"),
    };
    let (dirs, refused) = berth::slurm::files::pmix_dirs(conf_dir, &pmix);
    for dir in &refused {
        if dir.exists() {
            ffi::error(&format!(
                "berth: --mpi={mpi}: {} is not a directory of uid {uid}'s: left out of the container",
                dir.display()
            ));
        }
    }
    let dirs: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| !d.to_string_lossy().contains(':'))
        .collect();
    if dirs.is_empty() {
        ffi::error(&format!(
            "berth: --mpi={mpi}: no PMIx server directory for step {job}.{step} on this node (see SlurmdSpoolDir): PMIx will not work in the container"
        ));
    }
    dirs
}

/// This step's own view into a named container an earlier step made: its
/// own GPUs, /dev, mounts and cgroup over the container's files (the first
/// task of the step makes it, the others find it in the step's directory,
/// and the step's end removes it like an unnamed container).
pub(crate) fn step_view(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    options: &ContainerOptions,
    user: (u32, u32),
    (job, step): (u32, u32),
    named: &KeeperRecord,
) -> Result<KeeperRecord, String> {
    let dir = step_dir(args, job, step);
    make_state_dir(&dir)?;
    if let Some(view) = live_keeper(&dir) {
        return Ok(view);
    }
    let container_id = format!("{job}.{step}");
    let mut cmd = helper_command(
        sp,
        args,
        options,
        "slurm-join",
        user,
        true,
        &container_id,
        job_dir(sp).as_ref(),
    )?;
    cmd.arg("--join-pid")
        .arg(named.pid.to_string())
        .arg("--join-started")
        .arg(named.started.to_string());
    let view = named.seen_from(&run_helper(cmd, args)?, step);
    // Once for the step, before its tasks find the view.
    let view = crate::entrypoint::run_if_asked(sp, options, view, user, &dir)?;
    ffi::info(&format!(
        "berth: job {job} step {step}: joined the named container (keeper pid {}) with this step's view (keeper pid {})",
        named.pid, view.pid
    ));
    record_keeper(&dir, &view)?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(cwd: &str, pwd: Option<&str>) -> Option<JobDir> {
        JobDir::of_task(Some(PathBuf::from(cwd)), pwd.map(String::from))
    }

    #[test]
    fn the_job_directory_is_where_slurm_runs_the_task() {
        let at = |p: &str| Some(JobDir::At(PathBuf::from(p)));
        assert_eq!(dir("/home/u/run", Some("/home/u")), at("/home/u/run"));
        // Slurm's fallback when the directory is missing on the node...
        assert_eq!(dir("/tmp", Some("/home/u")), Some(JobDir::Missing));
        // ...unlike a job really run from /tmp.
        assert_eq!(dir("/tmp", Some("/tmp")), at("/tmp"));
        // job_container/tmpfs leaves the task in "/" until later.
        assert_eq!(dir("/", Some("/home/u")), at("/home/u"));
        assert_eq!(dir("/", Some("relative")), None);
    }

    #[test]
    fn a_batch_scripts_steps_inherit_absolute_paths_and_no_create() {
        use crate::options::{ContainerName, NameMode};
        let options = ContainerOptions {
            image: Some("./img.sqsh".into()),
            mounts: vec![
                MountRequest::parse("data:/data:ro").unwrap(),
                MountRequest::parse("tmpfs:/t").unwrap(),
            ],
            save: Some("out.sqsh".into()),
            name: Some(ContainerName {
                name: "dev".into(),
                mode: NameMode::Create,
            }),
            ..Default::default()
        };
        let at = JobDir::At(PathBuf::from("/home/u/job"));
        let inherited = inherited_options(&options, Some(&at), Some("/home/u/job".into()));
        assert_eq!(inherited.image.as_deref(), Some("/home/u/job/./img.sqsh"));
        assert_eq!(inherited.mounts[0].to_string(), "/home/u/job/data:/data:ro");
        assert_eq!(inherited.mounts[1].to_string(), "tmpfs:/t");
        assert_eq!(inherited.save, Some(PathBuf::from("/home/u/job/out.sqsh")));
        assert_eq!(
            inherited.name.as_ref().map(|n| n.mode),
            Some(NameMode::Auto)
        );
        let removing = ContainerOptions {
            name: Some(ContainerName {
                name: "dev".into(),
                mode: NameMode::Remove,
            }),
            ..Default::default()
        };
        assert_eq!(inherited_options(&removing, Some(&at), None).name, None);
    }

    #[test]
    fn relative_paths_come_from_the_job_directory_or_fail_clearly() {
        let at = JobDir::At(PathBuf::from("/home/u"));
        let mount = |text: &str| MountRequest::parse(text).unwrap();
        assert_eq!(
            mount_from_job_dir(&mount("data:/data:ro"), Some(&at)).unwrap(),
            "/home/u/data:/data:ro"
        );
        assert_eq!(
            mount_from_job_dir(&mount("/x:/y"), Some(&at)).unwrap(),
            "/x:/y"
        );
        let e = mount_from_job_dir(&mount("data:/data"), Some(&JobDir::Missing)).unwrap_err();
        assert!(e.starts_with("--container-mounts data:"), "{e}");
        let e =
            from_job_dir("./img.sqsh", Some(&JobDir::Missing), "--container-image").unwrap_err();
        assert!(
            e.contains("./img.sqsh") && e.contains("does not exist on this node"),
            "{e}"
        );
        assert!(from_job_dir("./img.sqsh", None, "--container-image").is_err());
    }
}
