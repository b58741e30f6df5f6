//! Command-line parsing and the `run` verb: turns options, config and image
//! into a ContainerSpec and hands it to `berth::process::run`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use berth::image::{ImageSource, ResolvedImage, Store};
use berth::process::{self, RunError, EXIT_BERTH_ERROR};
use berth::spec::{ContainerSpec, Identity, ProcessSpec};
use slurm_conf::Config;

/// berth: secure job containers for Slurm clusters and GPU servers.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about)]
struct Cli {
    /// Configuration file [default: /etc/berth/berth.toml, or $BERTH_CONFIG].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
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
    /// Run a command in a new container.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Bind a host path: SRC:DST[:ro|rw] (repeatable).
    #[arg(short, long = "mount", value_name = "SRC:DST[:ro]")]
    mounts: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Set an environment variable: K=V, or K to copy it from berth's environment (repeatable).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Hostname inside the container.
    #[arg(long)]
    hostname: Option<String>,
    /// Appear as root inside the container (still your own user outside).
    #[arg(long)]
    remap_root: bool,
    /// Read-only root filesystem, with a tmpfs /tmp.
    #[arg(long)]
    read_only: bool,
    /// Run as this user (UID[:GID]); only root may ask.
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// The image: a root filesystem directory or an OCI image layout directory.
    image: String,
    /// The command and its arguments [default: the image's Entrypoint and Cmd].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the CLI and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    let result = match &cli.command {
        Command::Run(args) => run(&cli, args),
    };
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

fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
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
        .without_time()
        .init();
}

fn load_config(cli: &Cli) -> Result<Config> {
    let (path, named) = match (&cli.config, std::env::var_os("BERTH_CONFIG")) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (PathBuf::from(slurm_conf::DEFAULT_CONFIG_PATH), false),
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

fn run(cli: &Cli, args: &RunArgs) -> Result<i32> {
    let config = load_config(cli)?;
    let privileged = nix::unistd::geteuid().is_root();
    let store = Store::open(
        &store_root(&config, privileged)?,
        privileged,
        config.security.allow_setuid,
    )?;
    let image = ImageSource::parse(&args.image)?.resolve(&store)?;
    let identity = identity(args, &image, privileged)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut mounts = Vec::new();
    for text in &args.mounts {
        let mount = berth::mounts::parse_mount(text, &cwd)?;
        berth::mounts::check_policy(&mount, &config.mounts)?;
        check_user_can_read(&mount.source, &identity)?;
        mounts.push(mount);
    }
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| config.container.hostname.clone());
    slurm_conf::validate_hostname(&hostname).map_err(|m| anyhow::anyhow!("--hostname: {m}"))?;
    let process = process_spec(args, &image)?;
    let root_capabilities = berth::caps::parse_names(config.remap_root_capabilities())?;
    let seccomp_program = if config.security.seccomp {
        Some(berth::seccomp::default_program(&store.seccomp_dir())?)
    } else {
        None
    };
    let console = std::io::stdin()
        .is_terminal()
        .then(|| nix::unistd::ttyname(std::io::stdin()).ok())
        .flatten();
    let spec = ContainerSpec {
        layers: image.layers,
        mount_point: store.mount_point(),
        upper_size: config.container.upper_size.clone(),
        read_only: args.read_only,
        hostname,
        mounts,
        identity,
        process,
        root_capabilities,
        console,
        seccomp_program,
    };
    tracing::info!(image = %image.id, uid = spec.identity.host_uid, remap_root = spec.identity.remap_root, "starting container");
    Ok(process::run(&spec)?)
}

fn parse_ids(text: &str) -> Result<(u32, Option<u32>)> {
    let mut parts = text.splitn(2, ':');
    let uid = parts
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("--user {text:?}: expected UID[:GID] as numbers"))?;
    let gid = parts
        .next()
        .map(str::parse)
        .transpose()
        .with_context(|| format!("--user {text:?}: expected UID[:GID] as numbers"))?;
    Ok((uid, gid))
}

/// Who the container runs as: the caller; root may name a user with --user,
/// and a root caller honours the image's User.
fn identity(args: &RunArgs, image: &ResolvedImage, privileged: bool) -> Result<Identity> {
    let (uid, gid) = if privileged {
        match (&args.user, &image.config.user) {
            (Some(user), _) => parse_ids(user)?,
            (None, Some(user)) if !user.is_empty() => image_user(user, image)?,
            _ => (0, Some(0)),
        }
    } else {
        if args.user.is_some() {
            bail!("--user: only root may choose the user a container runs as");
        }
        (
            nix::unistd::getuid().as_raw(),
            Some(nix::unistd::getgid().as_raw()),
        )
    };
    // The name service (maybe LDAP) is asked only for another user's group
    // list; it costs more than the rest of start-up together.
    let (gid, host_groups) = if !privileged {
        (gid.unwrap_or(uid), vec![])
    } else if uid == 0 && gid.is_none_or(|g| g == 0) {
        let groups = nix::unistd::getgroups().unwrap_or_default();
        (0, groups.iter().map(|g| g.as_raw()).collect())
    } else {
        let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let gid = gid.or(user.as_ref().map(|u| u.gid.as_raw())).unwrap_or(uid);
        let groups = match user {
            Some(u) => {
                let name = std::ffi::CString::new(u.name.as_str()).context("user name")?;
                nix::unistd::getgrouplist(&name, gid.into())
                    .map(|g| g.iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_else(|_| vec![gid])
            }
            None => vec![gid],
        };
        (gid, groups)
    };
    Ok(Identity {
        host_uid: uid,
        host_gid: gid,
        host_groups,
        remap_root: args.remap_root,
        privileged,
    })
}

/// Resolves an image's `User` (numeric or a name in the image's /etc/passwd).
fn image_user(user: &str, image: &ResolvedImage) -> Result<(u32, Option<u32>)> {
    let (name, group) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let passwd = image
        .layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())
        .unwrap_or_default();
    let uid = name.parse().ok().or_else(|| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == name)
            .and_then(|f| f[2].parse().ok())
    });
    let Some(uid) = uid else {
        bail!("the image's User {user:?} is not in its /etc/passwd")
    };
    let gid = match group {
        Some(g) => Some(
            g.parse()
                .with_context(|| format!("the image's User {user:?}: group must be numeric"))?,
        ),
        None => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].parse() == Ok(uid))
            .and_then(|f| f[3].parse().ok()),
    };
    Ok((uid, gid))
}

/// Checks, as the container's user, that a mount source is readable: root
/// mounting for someone else must not open paths that user cannot reach.
fn check_user_can_read(path: &Path, id: &Identity) -> Result<()> {
    use nix::unistd::{AccessFlags, ForkResult, Gid, Uid};
    let denied = || berth::mounts::MountError::PermissionDenied {
        path: path.to_path_buf(),
        uid: id.host_uid,
    };
    if !id.privileged {
        return nix::unistd::access(path, AccessFlags::R_OK).map_err(|_| denied().into());
    }
    if id.host_uid == 0 {
        return Ok(());
    }
    match berth::sys::fork()? {
        ForkResult::Child => {
            let groups: Vec<Gid> = id.host_groups.iter().map(|g| Gid::from_raw(*g)).collect();
            let ok = nix::unistd::setgroups(&groups).is_ok()
                && nix::unistd::setresgid(
                    Gid::from_raw(id.host_gid),
                    Gid::from_raw(id.host_gid),
                    Gid::from_raw(id.host_gid),
                )
                .is_ok()
                && nix::unistd::setresuid(
                    Uid::from_raw(id.host_uid),
                    Uid::from_raw(id.host_uid),
                    Uid::from_raw(id.host_uid),
                )
                .is_ok()
                && nix::unistd::access(path, AccessFlags::R_OK).is_ok();
            std::process::exit(if ok { 0 } else { 1 })
        }
        ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            _ => Err(denied().into()),
        },
    }
}

fn process_spec(args: &RunArgs, image: &ResolvedImage) -> Result<ProcessSpec> {
    let config = &image.config;
    let argv: Vec<String> = if args.command.is_empty() {
        config
            .entrypoint
            .iter()
            .flatten()
            .chain(config.cmd.iter().flatten())
            .cloned()
            .collect()
    } else {
        args.command.clone()
    };
    if argv.is_empty() {
        bail!("no command given and the image has no Entrypoint or Cmd");
    }
    let mut env: Vec<String> = config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if std::io::stdout().is_terminal() {
        if let Ok(term) = std::env::var("TERM") {
            set_env(&mut env, &format!("TERM={term}"));
        }
    }
    for e in &args.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => set_env(&mut env, e),
            None if !e.is_empty() => {
                if let Ok(v) = std::env::var(e) {
                    set_env(&mut env, &format!("{e}={v}"));
                }
            }
            _ => bail!("--env {e:?}: expected K=V or K"),
        }
    }
    let cwd = PathBuf::from(
        args.workdir
            .clone()
            .or_else(|| config.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
    );
    if !cwd.is_absolute() {
        bail!("--workdir {}: must be an absolute path", cwd.display());
    }
    Ok(ProcessSpec {
        args: argv,
        env,
        cwd,
    })
}

fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split('=').next().unwrap_or(entry);
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(entry.to_string());
}
