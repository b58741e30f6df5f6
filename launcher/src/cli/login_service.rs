//! `berth login-service`: root's side of `berth login`. One
//! single-threaded loop accepts connections and forks a process for each:
//! one serving a listed user's session (`login::serve`), one answering a
//! refusal, one stopping idle containers. The loop itself never reads a
//! user's message nor holds the last reference to a user's connection: a
//! descriptor passed in it could make closing it block (a socket that
//! lingers), and every login would wait.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{ForkResult, Pid, User};

use berth::login::container;
use berth::login::wire::{self, FromService};
use slurm_conf::Config;

use super::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct LoginServiceArgs {}

/// The most sessions one user may have at once, and all users together
/// (each is a process of root's while it lasts).
const MOST_SESSIONS_PER_USER: usize = 64;
const MOST_SESSIONS: usize = 1024;
/// The most refusals being answered at once: the oldest is killed (an
/// answer nobody reads, or a close that blocks, must not pile up).
const MOST_REFUSING: usize = 32;
/// How long a sweep of idle containers may take.
const SWEEP_AT_MOST: Duration = Duration::from_secs(120);
/// How long a connection may take to say what it wants.
pub(super) const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(10);

/// The service's children.
#[derive(Default)]
struct Children {
    /// Each serving process, by the uid it serves.
    serving: HashMap<Pid, u32>,
    /// The processes answering refusals, oldest first.
    refusing: VecDeque<Pid>,
    /// The process stopping idle containers, while one runs, and since when.
    sweeper: Option<(Pid, Instant)>,
    /// When each unlisted uid's refusal was last recorded.
    refused_at: HashMap<u32, Instant>,
}

/// `berth login-service`: listens on `[login] socket`; stops containers
/// idle for `[login] idle_stop`.
pub(crate) fn login_service(ctx: &Context, _args: &LoginServiceArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("berth login-service runs as root");
    }
    let listener = listen(&ctx.config.login.socket)?;
    // Sessions whose serving process died are reaped here.
    nix::sys::prctl::set_child_subreaper(true)?;
    tracing::info!(socket = %ctx.config.login.socket.display(), "berth login service listening");
    let mut children = Children::default();
    let mut last_sweep = Instant::now();
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, PollTimeout::from(1000u16)) {
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => return Err(e.into()),
            Ok(n) => n > 0,
        };
        children.reap();
        if ready {
            match wire::accept(listener.as_fd()) {
                Ok(conn) => children.take(ctx, conn, &listener),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        // Idle containers are stopped by a process of its own (stopping one
        // can take seconds): logins are not held up meanwhile. One stuck
        // for minutes (a container that will not die) is killed, and the
        // next sweep tries again.
        if let Some((pid, since)) = children.sweeper {
            if since.elapsed() > SWEEP_AT_MOST {
                tracing::warn!("stopping idle containers took over {SWEEP_AT_MOST:?}: killed");
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) && children.sweeper.is_none() {
            last_sweep = Instant::now();
            let sweeper = in_child(&listener, || {
                container::stop_idle(&ctx.store, &ctx.config, &ctx.config.store.summary_dir)
            });
            children.sweeper = sweeper.map(|pid| (pid, Instant::now()));
        }
    }
}

/// The service's socket at `socket`, in a directory only root may change,
/// made 0666 (anyone may ask, for themselves only: the peer's uid is the
/// kernel's) by the umask at bind, never chmod'ed by path.
fn listen(socket: &std::path::Path) -> Result<OwnedFd> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = socket.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    berth::root_dir::only_root_may_change(dir)
        .with_context(|| format!("[login] socket {}", socket.display()))?;
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o111));
    let listening = wire::listen(socket);
    nix::sys::stat::umask(umask);
    listening.with_context(|| format!("cannot listen on {}", socket.display()))
}

impl Children {
    /// Forgets the children that ended.
    fn reap(&mut self) {
        while let Ok(Some((pid, _))) = berth::sys::reap_any_child() {
            self.serving.remove(&pid);
            self.refusing.retain(|p| *p != pid);
            if self.sweeper.is_some_and(|(sweeper, _)| sweeper == pid) {
                self.sweeper = None;
            }
        }
    }

    /// Serves `conn`, or refuses it: a user with no container (recorded
    /// once a minute), one with too many sessions.
    fn take(&mut self, ctx: &Context, conn: OwnedFd, listener: &OwnedFd) {
        let uid = match wire::peer_uid(conn.as_fd()) {
            Ok(uid) => uid,
            Err(e) => return self.refuse(conn, listener, e.to_string()),
        };
        if let Some(why) = not_listed(&ctx.config, uid) {
            let now = Instant::now();
            let recorded = self.refused_at.get(&uid);
            if recorded.is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
                self.refused_at.insert(uid, now);
                super::login::record_refusal(&ctx.config, uid, &why);
            }
            return self.refuse(conn, listener, why);
        }
        let theirs = self.serving.values().filter(|u| **u == uid).count();
        if theirs >= MOST_SESSIONS_PER_USER || self.serving.len() >= MOST_SESSIONS {
            let why = format!(
                "too many sessions at once ({theirs} of yours, {} in all): end some first",
                self.serving.len()
            );
            return self.refuse(conn, listener, why);
        }
        let served = in_child(listener, || {
            if let Err(e) = super::login::serve(ctx, &conn) {
                let why = super::one_line(&e);
                let _ = wire::send(conn.as_fd(), &FromService::Refused(why), &[]);
            }
        });
        if let Some(pid) = served {
            self.serving.insert(pid, uid);
        }
    }

    /// Answers `conn` with `why` from a process of its own.
    fn refuse(&mut self, conn: OwnedFd, listener: &OwnedFd, why: String) {
        if self.refusing.len() >= MOST_REFUSING {
            if let Some(oldest) = self.refusing.pop_front() {
                let _ = kill(oldest, Signal::SIGKILL);
            }
        }
        let refusing = in_child(listener, || {
            // Its messages read first: a connection closed with unread ones
            // is reset, and the user would not see the answer.
            wire::discard_pending(conn.as_fd());
            let _ = wire::send(conn.as_fd(), &FromService::Refused(why), &[]);
        });
        if let Some(pid) = refusing {
            self.refusing.push_back(pid);
        }
    }
}

/// Runs `work` in a forked process (the service stays single-threaded),
/// which exits after it: its pid. The service's copies of what `work` uses
/// are dropped by the caller, never the last ones.
fn in_child(listener: &OwnedFd, work: impl FnOnce()) -> Option<Pid> {
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
            work();
            berth::sys::exit_child(0)
        }
    }
}

/// Why `uid` has no container here, if it has none.
fn not_listed(config: &Config, uid: u32) -> Option<String> {
    match User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) if berth::login::is_listed(&config.login, &user) => None,
        Ok(Some(user)) => Some(berth::login::LoginError::NotListed(user.name).to_string()),
        _ => Some(format!("uid {uid} has no name on this host")),
    }
}
