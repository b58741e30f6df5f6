//! `berth slurm-start` (hidden): the helper the SPANK plugin runs, as root,
//! from the first task of a step on a node. It brings the image into the
//! node's store, starts the step's container keeper (see
//! `berth::process::keeper`) and prints, as one JSON line, what the tasks
//! need to join it: the keeper's pid, the image's environment, the working
//! directory and the compiled seccomp program.

use anyhow::{bail, Result};

use berth::process::keeper;

use super::run::{build_spec, Purpose, RunArgs};
use super::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct SlurmStartArgs {
    /// The process whose end ends the container (the step's slurmstepd);
    /// without it the container lives until it is killed (named containers).
    #[arg(long, value_name = "PID")]
    watch_pid: Option<i32>,
    #[command(flatten)]
    run: RunArgs,
}

pub(crate) fn slurm_start(ctx: &Context, args: &SlurmStartArgs) -> Result<i32> {
    if !ctx.privileged || args.run.user_is_unset() {
        bail!("slurm-start is run by the SPANK plugin, as root, with --user");
    }
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    let purpose = Purpose {
        needs_command: false,
        default_hostname: hostname,
        proc_hidepid: true,
    };
    // The layer locks are inherited by the keeper and held as long as it lives.
    let (spec, image, _in_use) = build_spec(ctx, &args.run, &purpose)?;
    let pid = keeper::start_keeper(&spec, args.watch_pid.map(nix::unistd::Pid::from_raw))?;
    let reply = serde_json::json!({
        "pid": pid.as_raw(),
        "image": image.id,
        "env": spec.process.env,
        "workdir": spec.process.cwd,
        "seccomp": spec.seccomp_program.as_deref().map(hex::encode),
        "root_capabilities": spec.root_capabilities.iter().map(|c| c.index()).collect::<Vec<u8>>(),
    });
    println!("{reply}");
    Ok(0)
}
