//! `berth login` (the user's side: sshd's ForceCommand) and `berth
//! login-service` (root: starts the users' containers and their
//! sessions). See `berth::login` and docs/login.md.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, Pid, User};

use berth::audit;
use berth::login::wire::{self, FromService, FromUser};
use berth::login::{container, session, LoginPlan};
use berth::process::EXIT_BERTH_ERROR;
use berth::slurm::record::KeeperRecord;
use slurm_conf::Config;

use super::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct LoginArgs {
    /// Run COMMAND instead of a shell [default: $SSH_ORIGINAL_COMMAND,
    /// which sshd sets for `ssh host COMMAND`, scp, sftp and rsync].
    #[arg(short = 'c', value_name = "COMMAND")]
    command: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct LoginServiceArgs {}

/// The signals the user's side passes on to its session.
const PASSED_SIGNALS: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// `berth login`: hands this process's standard input, output and error
/// to the service, which runs the session in the user's container, and
/// exits with the session's exit status.
pub(crate) fn login(config: &Config, args: &LoginArgs) -> Result<i32> {
    let socket = &config.login.socket;
    let conn = wire::connect(socket).with_context(|| {
        format!(
            "cannot reach berth's login service at {} (is `berth login-service` running? tell the admins)",
            socket.display()
        )
    })?;
    let command = args
        .command
        .clone()
        .or_else(|| std::env::var("SSH_ORIGINAL_COMMAND").ok());
    let env = wire::PASSED_ON
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect();
    let mut signals = SigSet::empty();
    for signal in PASSED_SIGNALS {
        signals.add(signal);
    }
    signals.thread_block()?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC)?;
    wire::send(conn.as_fd(), &FromUser::Start { command, env }, &[0, 1, 2])?;
    loop {
        let mut fds = [
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if fds[1].any() == Some(true) {
            if let Ok(Some(info)) = signal_fd.read_signal() {
                wire::send(conn.as_fd(), &FromUser::Signal(info.ssi_signo as i32), &[])?;
            }
        }
        if fds[0].any() == Some(true) {
            return match wire::receive::<FromService>(conn.as_fd()) {
                Ok((FromService::Exit(code), _)) => Ok(code),
                Ok((FromService::Refused(why), _)) => {
                    eprintln!("berth: {why}");
                    Ok(EXIT_BERTH_ERROR)
                }
                Err(e) => bail!("the login service ended the session: {e}"),
            };
        }
    }
}

/// `berth login-service`: listens on `[login] socket` and serves each
/// session in a process of its own; stops containers idle for
/// `[login] idle_stop` seconds.
pub(crate) fn login_service(ctx: &Context, _args: &LoginServiceArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("berth login-service runs as root");
    }
    let socket = &ctx.config.login.socket;
    let dir = socket.parent().unwrap_or(std::path::Path::new("/"));
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Root's alone: nobody may swap the socket for something else.
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            bail!(
                "[login] socket: its directory {} must be root's and writable by root only",
                dir.display()
            );
        }
    }
    // Anyone may ask, for themselves only (the peer's uid is the kernel's):
    // the socket is made 0666 by the umask at bind, never chmod'ed by path.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o111));
    let listening = wire::listen(socket);
    nix::sys::stat::umask(umask);
    let listener = listening.with_context(|| format!("cannot listen on {}", socket.display()))?;
    // Sessions whose serving process died are reaped here.
    nix::sys::prctl::set_child_subreaper(true)?;
    tracing::info!(socket = %socket.display(), "berth login service listening");
    let mut last_sweep = Instant::now();
    let mut sweeper: Option<Pid> = None;
    // Each connection's serving process, by the uid it serves.
    let mut serving: std::collections::HashMap<Pid, u32> = Default::default();
    // When each unlisted uid's refusal was last recorded.
    let mut refused_at: std::collections::HashMap<u32, Instant> = Default::default();
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, PollTimeout::from(1000u16)) {
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => return Err(e.into()),
            Ok(n) => n > 0,
        };
        while let Ok(Some((pid, _))) = berth::sys::reap_any_child() {
            serving.remove(&pid);
            if sweeper == Some(pid) {
                sweeper = None;
            }
        }
        if ready {
            match wire::accept(listener.as_fd()) {
                Ok(conn) => {
                    let Ok(uid) = wire::peer_uid(conn.as_fd()) else {
                        continue;
                    };
                    // Who has no container is answered here, without a
                    // process of root's for them (and recorded once a minute).
                    if let Some(why) = not_listed(&ctx.config, uid) {
                        let now = Instant::now();
                        let recorded = refused_at.get(&uid);
                        if recorded
                            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60))
                        {
                            refused_at.insert(uid, now);
                            record_refusal(&ctx.config, uid, &why);
                        }
                        wire::discard_pending(conn.as_fd());
                        let _ = wire::send(conn.as_fd(), &FromService::Refused(why), &[]);
                        continue;
                    }
                    let theirs = serving.values().filter(|u| **u == uid).count();
                    if theirs >= MOST_SESSIONS_PER_USER || serving.len() >= MOST_SESSIONS {
                        let why = format!(
                            "too many sessions at once ({theirs} of yours, {} in all): end some first",
                            serving.len()
                        );
                        wire::discard_pending(conn.as_fd());
                        let _ = wire::send(conn.as_fd(), &FromService::Refused(why), &[]);
                        continue;
                    }
                    if let Some(pid) = serve_in_child(ctx, conn, &listener) {
                        serving.insert(pid, uid);
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        // Idle containers are stopped by a process of its own (stopping one
        // can take seconds): logins are not held up meanwhile.
        if last_sweep.elapsed() >= Duration::from_secs(1) && sweeper.is_none() {
            last_sweep = Instant::now();
            sweeper = sweep_in_child(ctx, &listener);
        }
    }
}

/// Stops the idle containers in a forked process: its pid.
fn sweep_in_child(ctx: &Context, listener: &OwnedFd) -> Option<Pid> {
    // SAFETY: the service is single-threaded.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() };
    match forked {
        Err(e) => {
            tracing::warn!("cannot fork: {e}");
            None
        }
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::close(listener.as_raw_fd());
            container::stop_idle(&ctx.store, &ctx.config, &ctx.config.store.summary_dir);
            berth::sys::exit_child(0)
        }
    }
}

/// The most sessions one user may have at once, and all users together
/// (each is a process of root's until its session has started).
const MOST_SESSIONS_PER_USER: usize = 64;
const MOST_SESSIONS: usize = 1024;

/// How long a connection may take to say what it wants.
const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(10);

/// Serves `conn` in a forked process (the service stays single-threaded):
/// its pid.
fn serve_in_child(ctx: &Context, conn: OwnedFd, listener: &OwnedFd) -> Option<Pid> {
    // SAFETY: the service is single-threaded.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() };
    match forked {
        Err(e) => {
            tracing::warn!("cannot fork: {e}");
            None
        }
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::close(listener.as_raw_fd());
            let refuse = |why: String| {
                let _ = wire::send(conn.as_fd(), &FromService::Refused(why), &[]);
            };
            if let Err(e) = serve(ctx, &conn) {
                refuse(super::one_line(&e));
            }
            berth::sys::exit_child(0)
        }
    }
}

/// One session: its user's container started or joined, its process
/// started, the user's side's signals passed on, its end answered.
fn serve(ctx: &Context, conn: &OwnedFd) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let (uid, peer_pid) = wire::peer(conn.as_fd())?;
    let (message, stdio) = wire::receive_within::<FromUser>(conn.as_fd(), FIRST_MESSAGE_WITHIN)?;
    let FromUser::Start { command, env } = message else {
        bail!("a session must start first");
    };
    if stdio.len() != 3 {
        bail!("a session needs its standard input, output and error");
    }
    let user = User::from_uid(nix::unistd::Uid::from_raw(uid))?
        .with_context(|| format!("uid {uid} has no name on this host"))?;
    let plan = LoginPlan::of(&ctx.config, &user)
        .inspect_err(|e| record_refusal(&ctx.config, uid, &e.to_string()))?;
    let session_fds: Vec<_> = stdio
        .iter()
        .map(|fd| fd.as_raw_fd())
        .chain([conn.as_raw_fd()])
        .collect();
    let running = container::start_or_join(&ctx.build_context(), ctx, &plan, &session_fds)?;
    let login = &ctx.config.login;
    let started = session::start(&session::Session {
        base: &running.base,
        user: &user,
        groups: plan.groups(),
        remap_root: plan.remap_root,
        workdir: &plan.workdir,
        shells: &login.shells,
        command: command.as_deref(),
        passed_env: &env,
        plan_env: &plan.env,
        peer: Pid::from_raw(peer_pid),
        stdio: &stdio,
    });
    // The session's descriptors are its own now: the user's side sees
    // their end when the session's processes close them.
    drop(stdio);
    let session_audit = audit::Record {
        image_id: Some(running.base.image.clone()),
        command: Some(command.clone().unwrap_or_else(|| "(login shell)".into())),
        ..audit::Record::new(
            audit::Event::SessionStart,
            audit::Origin::Login,
            uid,
            &plan.image,
        )
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(why) => {
            audit::record(
                &ctx.config.audit,
                &audit::Record {
                    event: audit::Event::StartFailed,
                    reason: Some(why.clone()),
                    ..session_audit
                },
            );
            bail!(why);
        }
    };
    // A session that has already ended (`ssh host true`) uses nothing.
    if let Ok(record) = KeeperRecord::of_keeper(pid.as_raw()) {
        container::add_session(&running.held, &record)?;
    }
    drop(running);
    let session_audit = audit::Record {
        pid: Some(pid.as_raw()),
        ..session_audit
    };
    audit::record(&ctx.config.audit, &session_audit);
    let since = Instant::now();
    let code = wait_passing_signals(conn, pid)?;
    container::end_session(&ctx.store, uid, pid.as_raw());
    audit::record(
        &ctx.config.audit,
        &audit::Record {
            time: audit::now(),
            event: audit::Event::SessionEnd,
            exit: Some(code),
            duration_ms: Some(since.elapsed().as_millis() as u64),
            ..session_audit
        },
    );
    let _ = wire::send(conn.as_fd(), &FromService::Exit(code), &[]);
    Ok(())
}

/// Why `uid` has no container here, if it has none.
fn not_listed(config: &Config, uid: u32) -> Option<String> {
    match User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) if berth::login::is_listed(&config.login, &user) => None,
        Ok(Some(user)) => Some(berth::login::LoginError::NotListed(user.name).to_string()),
        _ => Some(format!("uid {uid} has no name on this host")),
    }
}

/// The audit record of a login refused before anything started.
fn record_refusal(config: &Config, uid: u32, why: &str) {
    let mut record = audit::Record::new(
        audit::Event::StartFailed,
        audit::Origin::Login,
        uid,
        &config.login.image,
    );
    record.reason = Some(why.to_string());
    audit::record(&config.audit, &record);
}

/// Waits for session process `pid` (a child), passing on the signals the
/// user's side reports (a hang-up when it goes away): its exit status.
fn wait_passing_signals(conn: &OwnedFd, pid: Pid) -> Result<i32> {
    let pidfd = berth::sys::pidfd_open(pid)?;
    let mut user_side = true;
    loop {
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if user_side {
            fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if fds[0].any() == Some(true) {
            let end = berth::sys::reap_child(pid, true)?;
            return Ok(end.and_then(|e| e.exit_code()).unwrap_or(EXIT_BERTH_ERROR));
        }
        if user_side && fds[1].any() == Some(true) {
            let signal = match wire::receive::<FromUser>(conn.as_fd()) {
                Ok((FromUser::Signal(n), _)) => Signal::try_from(n)
                    .ok()
                    .filter(|s| PASSED_SIGNALS.contains(s)),
                Ok(_) => None,
                Err(_) => {
                    // The user's side is gone (killed, or sshd's end).
                    user_side = false;
                    Some(Signal::SIGHUP)
                }
            };
            if let Some(signal) = signal {
                let _ = berth::sys::pidfd_send_signal(pidfd.as_fd(), signal as i32);
            }
        }
    }
}
