//! Running `berth`'s helpers for a step, as root: `slurm-start` (the
//! step's container keeper) and `slurm-join` (a later step's own view into
//! a named container). Each answers with one JSON line; a failure's last
//! line is what srun shows.

use std::path::Path;
use std::process::Command;

use slurm_conf::plugstack::PlugstackArgs;

use crate::ffi;
use crate::remote::{live_keeper, make_state_dir, record_keeper, step_dir, strings};

/// The `berth` helper (`slurm-start` or `slurm-join`) with what both are told
/// about the step: its slurmstepd, cgroup, partition, user, GPUs and mounts.
fn helper_command(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    values: &crate::options::Values,
    verb: &str,
    (uid, gid): (u32, u32),
    tied_to_step: bool,
    container_id: &str,
) -> Command {
    let mut cmd = Command::new(&args.berth);
    cmd.arg("--config").arg(&args.config).arg("-q").arg(verb);
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
    if let Some(node) = ffi::getenv(sp, "SLURMD_NODENAME") {
        cmd.arg("--node-name").arg(node);
    }
    for mount in values.mounts() {
        cmd.arg("--mount").arg(mount);
    }
    if values.flag("container-mount-home") {
        if let Some(home) = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.dir)
        {
            cmd.arg("--mount")
                .arg(format!("{}:{}", home.display(), home.display()));
        }
    }
    // Made once per step by the helper that builds the container (or the
    // view); each task enters it in task_init.
    if let Some(w) = values.get("container-workdir") {
        cmd.arg("--workdir").arg(w);
    }
    // Relative image and mount paths are the user's: resolve them from the job's directory.
    if let Some(pwd) = ffi::getenv(sp, "PWD").filter(|p| Path::new(p).is_absolute()) {
        cmd.current_dir(pwd);
    }
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root");
    cmd
}

/// Runs a helper; its JSON answer, or its last error line.
fn run_helper(mut cmd: Command, args: &PlugstackArgs) -> Result<serde_json::Value, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run {}: {e} (is berth installed on this node?)",
            args.berth.display()
        )
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
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable answer from {}: {e}", args.berth.display()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn start_keeper(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    values: &crate::options::Values,
    image: &str,
    user: (u32, u32),
    batch_script: Option<&str>,
    tied_to_step: bool,
    container_id: &str,
) -> Result<serde_json::Value, String> {
    let mut cmd = helper_command(
        sp,
        args,
        values,
        "slurm-start",
        user,
        tied_to_step,
        container_id,
    );
    if let Some(script) = batch_script.filter(|s| s.starts_with('/')) {
        cmd.arg("--mount").arg(format!("{script}:{script}:ro"));
    }
    if values.flag("container-readonly") {
        cmd.arg("--read-only");
    }
    cmd.arg(image);
    run_helper(cmd, args)
}

/// This step's own view into a named container an earlier step made: its
/// own GPUs, /dev, mounts and cgroup over the container's files (the first
/// task of the step makes it, the others find it in the step's directory,
/// and the step's end removes it like an unnamed container).
pub(crate) fn step_view(
    sp: ffi::spank_t,
    args: &PlugstackArgs,
    values: &crate::options::Values,
    user: (u32, u32),
    (job, step): (u32, u32),
    named: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let dir = step_dir(args, job, step);
    make_state_dir(&dir)?;
    if let Some(view) = live_keeper(&dir) {
        return Ok(view);
    }
    let container_id = format!("{job}.{step}");
    let mut cmd = helper_command(sp, args, values, "slurm-join", user, true, &container_id);
    cmd.arg("--join-pid").arg(named["pid"].to_string());
    let answer = run_helper(cmd, args)?;
    // The named container's answer with this step's keeper, devices and
    // cgroup: the earlier step's device variables are not this step's.
    let mut view = named.clone();
    let earlier_device_keys: Vec<&str> = strings(named, "device_env")
        .filter_map(|e| e.split('=').next())
        .collect();
    let env: Vec<&str> = strings(named, "env")
        .filter(|e| !earlier_device_keys.contains(&e.split('=').next().unwrap_or_default()))
        .collect();
    view["env"] = serde_json::json!(env);
    for key in ["pid", "device_env", "cgroup_dirs"] {
        view[key] = answer[key].clone();
    }
    view["step"] = serde_json::json!(step);
    ffi::info(&format!(
        "berth: job {job} step {step}: joined the named container (keeper pid {}) with this step's view (keeper pid {})",
        named["pid"], view["pid"]
    ));
    record_keeper(&dir, &view)?;
    Ok(view)
}
