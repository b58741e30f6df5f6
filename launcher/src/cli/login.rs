//! `berth login` (the user's side: sshd's ForceCommand) and `berth
//! login-service` (root: starts the users' containers and their
//! sessions). See `berth::login` and docs/login.md.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Pid, User};

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

/// One session: its user's container started or joined, its process
/// started, the user's side's signals passed on, its end answered.
pub(super) fn serve(ctx: &Context, conn: &OwnedFd) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let (uid, peer_pid) = wire::peer(conn.as_fd())?;
    let (message, stdio) =
        wire::receive_within::<FromUser>(conn.as_fd(), super::login_service::FIRST_MESSAGE_WITHIN)?;
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

/// The audit record of a login refused before anything started.
pub(super) fn record_refusal(config: &Config, uid: u32, why: &str) {
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
