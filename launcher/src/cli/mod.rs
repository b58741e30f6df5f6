//! The `berth` command line: parsing, logging, config and store, and the
//! dispatch to each verb (`run.rs`, `images.rs`, `containers.rs`).

mod containers;
mod images;
mod login;
mod login_service;
mod progress;
mod run;
mod slurm;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use berth::image::Store;
use berth::process::{RunError, EXIT_BERTH_ERROR};
use slurm_conf::Config;

/// berth: secure job containers for Slurm clusters and GPU servers.
#[derive(Parser, Debug)]
#[command(name = "berth", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTH_BUILT_FOR"), ")"), about)]
struct Cli {
    /// Configuration file [default: /etc/berth/berth.toml, or $BERTH_CONFIG].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Configuration file read if it exists, else the built-in defaults (the
    /// SPANK plugin passes its plugstack `config=` this way).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        hide = true,
        conflicts_with = "config"
    )]
    config_if_present: Option<PathBuf>,
    /// Only print errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print what berth does (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a new container (pulls or imports the image on first use).
    Run(run::RunArgs),
    /// Fetch an image from a registry into the store.
    Pull(images::PullArgs),
    /// Import an OCI layout, docker-archive tar or squashfs file into the store.
    Import(images::ImportArgs),
    /// List the images in the store.
    Images,
    /// Remove an image from the store (its layers go at the next gc), or a named container.
    Rm(images::RmArgs),
    /// Remove old unused named containers, then unused layers and least recently used images, down to a size.
    Gc(images::GcArgs),
    /// List the named containers on this node (Slurm container_scope=global).
    #[command(visible_alias = "containers")]
    Ps(containers::PsArgs),
    /// Stop a named container now (a login user's, or a Slurm job's kept
    /// one), with every session and step in it (root only).
    Stop(containers::StopArgs),
    /// Check, as root, that a user's container is isolated (user mapping,
    /// filesystem, GPUs, privileges, other users).
    Verify(verify::VerifyArgs),
    /// The SSH entry point of a shared server (sshd's ForceCommand): a
    /// session in the user's own container, from `[login]`.
    Login(login::LoginArgs),
    /// The root service `berth login` reaches: starts the users'
    /// containers and sessions (run it as a system service).
    LoginService(login_service::LoginServiceArgs),
    /// Start a Slurm step's container keeper (used by the SPANK plugin).
    #[command(hide = true)]
    SlurmStart(Box<slurm::SlurmStartArgs>),
    /// Give a Slurm step its own view into a named container (used by the SPANK plugin).
    #[command(hide = true)]
    SlurmJoin(slurm::SlurmJoinArgs),
    /// Save a Slurm step's container as squashfs (used by the SPANK plugin).
    #[command(hide = true)]
    SlurmSave(slurm::SlurmSaveArgs),
    /// End the keepers of a user's named containers no step uses (used by the SPANK plugin).
    #[command(hide = true)]
    SlurmLeave(slurm::SlurmLeaveArgs),
}

/// What every verb needs: the config, the store, whether berth runs as root.
pub(crate) struct Context {
    config: Config,
    store: Store,
    privileged: bool,
    quiet: bool,
}

impl Context {
    /// What the spec builder needs of this invocation.
    fn build_context(&self) -> berth::spec::build::BuildContext<'_> {
        berth::spec::build::BuildContext {
            config: &self.config,
            store: &self.store,
            privileged: self.privileged,
        }
    }

    fn new(cli: &Cli) -> Result<Context> {
        let config = load_config(cli)?;
        let privileged = nix::unistd::geteuid().is_root();
        let store = Store::open(
            &store_root(&config, privileged)?,
            privileged,
            config.security.allow_setuid,
        )?
        .with_max_layer_depth(config.store.max_layer_depth)
        .with_max_layer_bytes(slurm_conf::parse_size(&config.store.max_size).unwrap_or(u64::MAX));
        Ok(Context {
            config,
            store,
            privileged,
            quiet: cli.quiet,
        })
    }
}

/// Runs the CLI and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse_from(as_login_shell(std::env::args_os().collect()));
    init_logging(cli.quiet, cli.verbose);
    // A user's login needs no store: only where the service listens.
    if let Command::Login(args) = &cli.command {
        return finish(load_config(&cli).and_then(|config| login::login(&config, args)));
    }
    let result = Context::new(&cli).and_then(|ctx| match &cli.command {
        Command::Run(args) => run::run(&ctx, args),
        Command::Pull(args) => images::pull(&ctx, args),
        Command::Import(args) => images::import(&ctx, args),
        Command::Images => images::list(&ctx),
        Command::Rm(args) => images::rm(&ctx, args),
        Command::Gc(args) => images::gc(&ctx, args),
        Command::Ps(args) => containers::ps(&ctx, args),
        Command::Stop(args) => containers::stop(&ctx, args),
        Command::Verify(args) => verify::verify(&ctx, args),
        Command::Login(_) => unreachable!("served above"),
        Command::LoginService(args) => login_service::login_service(&ctx, args),
        Command::SlurmStart(args) => slurm::slurm_start(&ctx, args),
        Command::SlurmJoin(args) => slurm::slurm_join(&ctx, args),
        Command::SlurmSave(args) => slurm::slurm_save(&ctx, args),
        Command::SlurmLeave(args) => slurm::slurm_leave(&ctx, args),
    });
    finish(result)
}

/// The arguments as a user's login shell gets them (`-berth`, `berth -c
/// COMMAND`: sshd runs the shell so) turned into `berth login [-c
/// COMMAND]`; any others as they are.
fn as_login_shell(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let login_name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"-"));
    let login = login_name && args.len() == 1;
    let shell_command = args.len() == 3 && args[1] == "-c";
    if !(login || shell_command) {
        return args;
    }
    let mut login: Vec<std::ffi::OsString> = vec!["berth".into(), "login".into()];
    login.extend(args.into_iter().skip(1));
    login
}

/// The exit code of a verb's result, its error said on stderr.
fn finish(result: Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<RunError>()
                .map(RunError::exit_code)
                .unwrap_or(EXIT_BERTH_ERROR);
            eprintln!("berth: {}", one_line(&e));
            code
        }
    }
}

/// The error and its causes on one line, without repeating a cause that an
/// error's own message already shows.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !line.contains(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

fn load_config(cli: &Cli) -> Result<Config> {
    let from_env = std::env::var_os("BERTH_CONFIG");
    let (path, named) = match (&cli.config, &cli.config_if_present, from_env) {
        (Some(p), _, _) => (p.clone(), true),
        (None, Some(p), _) => (p.clone(), false),
        (None, None, Some(p)) => (PathBuf::from(p), true),
        (None, None, None) => (PathBuf::from(slurm_conf::DEFAULT_CONFIG_PATH), false),
    };
    Ok(Config::load(&path, named)?)
}

/// The store this invocation uses: the node's shared one for root, a private
/// one under $XDG_DATA_HOME for everyone else.
fn store_root(config: &Config, privileged: bool) -> Result<PathBuf> {
    if privileged {
        return Ok(config.store.path.clone());
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(Path::new(&data).join("berth"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set: cannot place the image store")?;
    Ok(Path::new(&home).join(".local/share/berth"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_shell_is_berth_login() {
        let args = |list: &[&str]| {
            list.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(as_login_shell(args(&["-berth"])), args(&["berth", "login"]));
        assert_eq!(
            as_login_shell(args(&["/usr/bin/berth", "-c", "ls -l"])),
            args(&["berth", "login", "-c", "ls -l"])
        );
        for other in [
            &["berth", "run", "img"][..],
            &["berth"],
            &["berth", "-c", "x", "y"],
        ] {
            assert_eq!(as_login_shell(args(other)), args(other));
        }
    }
}
