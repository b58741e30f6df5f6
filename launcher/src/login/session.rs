//! A login session's process: forked by the service (root, single
//! threaded, a child subreaper), it joins the user's running container
//! (`process::join`, as a Slurm task does), forks into the container's pid
//! namespace, and there becomes the user's shell or command on the
//! session's own descriptors: a session of its own with the session's
//! terminal as its controlling terminal (job control, Ctrl-C, resizes
//! and sshd's hang-up reach it directly), the user's ids and groups (or,
//! remapped, root of a user namespace of its own mapped to the user), no
//! capabilities, no_new_privs and the container's seccomp filter.
//!
//! The joining process exits once the session's process exists, leaving it
//! to the service (the subreaper), which waits for it and signals it.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, Pid};

use crate::process::confine::{Confinement, Filter};
use crate::process::join::{
    enter_container, enter_remapped_user_namespace, remapped_user_namespace,
};
use crate::slurm::record::KeeperRecord;

/// Where the host's sftp-server is bound in, for images without one.
pub const SFTP_SERVER_IN_CONTAINER: &str = "/.berth-sftp-server";
/// The image's own sftp-server, where Debian puts it.
const IMAGE_SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// What a session is.
pub struct Session<'a> {
    /// The container's keeper.
    pub base: &'a KeeperRecord,
    /// Whose session.
    pub user: &'a nix::unistd::User,
    /// Their supplementary groups (the host's).
    pub groups: Vec<u32>,
    /// Root of a user namespace of its own, mapped to the user.
    pub remap_root: bool,
    /// Where it starts (and HOME).
    pub workdir: &'a str,
    /// The shells to look for in the container, in order.
    pub shells: &'a [String],
    /// `ssh host COMMAND`, or None: a login shell.
    pub command: Option<&'a str>,
    /// The user's side's variables it keeps.
    pub passed_env: &'a [(String, String)],
    /// Variables of the configuration's (`NAME=value`).
    pub plan_env: &'a [String],
    /// Its standard input, output and error.
    pub stdio: &'a [OwnedFd],
    /// The user's side (`berth login`): a terminal is taken only from its
    /// session.
    pub peer: Pid,
}

/// Starts `session`: the pid (in the host's pid namespace) of its process,
/// the caller's child (the caller must be a child subreaper), once it has
/// exec'd; or why it could not.
pub fn start(session: &Session) -> Result<Pid, String> {
    if session.stdio.len() != 3 {
        return Err("a session needs its standard input, output and error".into());
    }
    let (status_r, status_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: the service is single-threaded; the child only joins the
    // container, forks and exits (or execs).
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() };
    let joiner = match forked {
        Err(e) => return Err(format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(status_r);
            join_and_fork(session, status_w)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(status_w);
    // EOF once the session's process has exec'd (or died): every writer's
    // end is close-on-exec.
    let mut said = String::new();
    let _ = std::fs::File::from(status_r).read_to_string(&mut said);
    let mut pid = None;
    let mut error = None;
    for line in said.lines() {
        match line.split_once(' ') {
            Some(("pid", n)) if pid.is_none() => pid = n.parse().ok().map(Pid::from_raw),
            Some(("error", why)) if error.is_none() => error = Some(why.to_string()),
            _ => {}
        }
    }
    // On a terminal the joining process stays, as the session's relay;
    // otherwise it is reaped first: once it is, the session it left is
    // this subreaper's child.
    if pid != Some(joiner) || error.is_some() {
        let _ = crate::sys::reap_child(joiner, true);
    }
    // Only a child of this process (the joiner, or the session it left)
    // is ever waited for or signalled.
    let pid = match pid {
        Some(p) if p != joiner && !is_child(p) => {
            return Err(format!("the session's process {p} is not the service's"))
        }
        pid => pid,
    };
    if let Some(why) = error {
        if let Some(pid) = pid.filter(|p| *p != joiner) {
            let _ = crate::sys::reap_child(pid, true);
        }
        return Err(why);
    }
    pid.ok_or_else(|| "the session's process died as it started".into())
}

/// Whether `pid` is a child of this process (not yet reaped).
fn is_child(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    waitid(
        Id::Pid(pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    )
    .is_ok()
}

/// In the joining process: never returns.
fn join_and_fork(session: &Session, status_w: OwnedFd) -> ! {
    let fail = |why: String| -> ! {
        let _ = nix::unistd::write(&status_w, format!("error {why}\n").as_bytes());
        crate::sys::exit_child(crate::process::EXIT_BERTH_ERROR)
    };
    let on_terminal = nix::unistd::isatty(session.stdio[0].as_raw_fd()).unwrap_or(false);
    if on_terminal && !terminal_is_theirs(session) {
        fail("the session's terminal is not the controlling terminal of your login: run berth login from sshd".into())
    }
    // Remapped: the user namespace, made with the host's /proc.
    let userns = match session.remap_root {
        true => {
            let (uid, gid) = (session.user.uid.as_raw(), session.user.gid.as_raw());
            Some(remapped_user_namespace(uid, gid).unwrap_or_else(|e| fail(e)))
        }
        false => None,
    };
    if let Err(e) = enter_container(session.base) {
        fail(e)
    }
    let terminal = match on_terminal {
        true => container_terminal(session).unwrap_or_else(|e| fail(e)),
        false => None,
    };
    // SAFETY: single-threaded (forked from a single-threaded process).
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() };
    match (forked, terminal) {
        (Err(e), _) => fail(format!("cannot fork into the container: {e}")),
        (Ok(ForkResult::Child), terminal) => {
            let Err(why) = become_session(
                session,
                terminal.as_ref().map(|t| &t.slave),
                userns.as_ref(),
            );
            fail(why)
        }
        (Ok(ForkResult::Parent { child }), None) => {
            let _ = nix::unistd::write(&status_w, format!("pid {child}\n").as_bytes());
            crate::sys::exit_child(0)
        }
        (Ok(ForkResult::Parent { child }), Some(terminal)) => {
            let me = nix::unistd::getpid();
            let _ = nix::unistd::write(&status_w, format!("pid {me}\n").as_bytes());
            drop(status_w);
            drop(terminal.slave);
            // The relay keeps its terminals and nothing of the service's,
            // and is the user from here on (no capabilities), as is the
            // session it waits for and signals.
            if let Err(e) = crate::sys::close_all_but(&[terminal.master.as_raw_fd()]) {
                fail_quietly(&format!("cannot close descriptors: {e}"))
            }
            let (u, g) = (session.user.uid, session.user.gid);
            let dropped = nix::unistd::setgroups(&[g])
                .and_then(|()| nix::unistd::setresgid(g, g, g))
                .and_then(|()| nix::unistd::setresuid(u, u, u))
                .map_err(|e| e.to_string())
                .and_then(|()| nix::sys::prctl::set_no_new_privs().map_err(|e| e.to_string()));
            if let Err(e) = dropped {
                fail_quietly(&format!("cannot become the user: {e}"))
            }
            let code = crate::process::terminal::relay_until_exit(child, terminal.master)
                .unwrap_or(crate::process::EXIT_BERTH_ERROR);
            crate::sys::exit_child(code)
        }
    }
}

/// The relay's end when it cannot go on: said on the session's terminal
/// (its only output), the session killed with it.
fn fail_quietly(why: &str) -> ! {
    eprintln!("berth: {why}");
    crate::sys::exit_child(crate::process::EXIT_BERTH_ERROR)
}

/// On a terminal (`ssh -t`, a login shell): the joining process becomes the
/// session's relay, as `berth run -t` is, between sshd's terminal (its
/// controlling terminal from now on: resizes and sshd's hang-up reach it)
/// and a terminal of the container's own (its /dev/pts, which the session
/// can name: `tty`, tmux and screen need that), with sshd's terminal's
/// size and modes, the user's.
fn container_terminal(
    session: &Session,
) -> Result<Option<crate::process::terminal::Terminal>, String> {
    for (i, fd) in session.stdio.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), i as i32)
            .map_err(|e| format!("cannot take the session's descriptors: {e}"))?;
    }
    let stdin = std::io::stdin();
    nix::unistd::setsid().map_err(|e| format!("cannot start a session: {e}"))?;
    crate::sys::take_controlling_terminal(stdin.as_fd())
        .map_err(|e| format!("cannot take the session's terminal: {e}"))?;
    let terminal = crate::process::terminal::Terminal::for_stdin()
        .map_err(|e| format!("cannot make the container's terminal: {e}"))?;
    if let Some(t) = &terminal {
        let (uid, gid) = (session.user.uid, session.user.gid);
        nix::unistd::fchown(t.slave.as_raw_fd(), Some(uid), Some(gid))
            .and_then(|()| {
                nix::sys::stat::fchmod(
                    t.slave.as_raw_fd(),
                    nix::sys::stat::Mode::from_bits_truncate(0o620),
                )
            })
            .map_err(|e| format!("cannot give the container's terminal to the user: {e}"))?;
    }
    // The relay reads them from a signalfd; the session unblocks them.
    crate::process::signals::block_forwarded().map_err(|e| format!("cannot block signals: {e}"))?;
    Ok(terminal)
}

/// In the session's process, in the container: its descriptors,
/// terminal, identity and confinement, then exec.
fn become_session(
    session: &Session,
    terminal: Option<&OwnedFd>,
    userns: Option<&OwnedFd>,
) -> Result<std::convert::Infallible, String> {
    nix::unistd::setsid().map_err(|e| format!("cannot start a session: {e}"))?;
    let stdio: Vec<&OwnedFd> = match terminal {
        Some(slave) => vec![slave; 3],
        None => session.stdio.iter().collect(),
    };
    for (i, fd) in stdio.into_iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), i as i32)
            .map_err(|e| format!("cannot take the session's descriptors: {e}"))?;
    }
    if terminal.is_some() {
        crate::sys::make_controlling_terminal(std::io::stdin().as_fd())
            .map_err(|e| format!("cannot take the container's terminal: {e}"))?;
    }
    // Nothing of the service's may reach the user's processes.
    crate::sys::cloexec_from(3).map_err(|e| format!("cannot close descriptors: {e}"))?;
    let (uid, gid) = (session.user.uid.as_raw(), session.user.gid.as_raw());
    let seccomp = session.base.seccomp_program()?;
    let capabilities: crate::caps::CapsHashSet = match session.remap_root {
        true => session
            .base
            .root_capabilities
            .iter()
            .filter_map(|i| crate::caps::from_index(*i))
            .collect(),
        false => Default::default(),
    };
    if session.remap_root {
        // The capabilities root keeps in its own namespace stay in the
        // bounding set; the user's ids first, then the namespace.
        crate::caps::limit_bounding_set(&capabilities).map_err(|e| e.to_string())?;
        use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
        let groups: Vec<Gid> = session.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        setgroups(&groups)
            .and_then(|()| setresgid(g, g, g))
            .and_then(|()| setresuid(u, u, u))
            .map_err(|e| format!("cannot become {}: {e}", session.user.name))?;
        if let Some(userns) = userns {
            enter_remapped_user_namespace(userns)?;
        }
    }
    Confinement {
        groups: (!session.remap_root).then_some(&session.groups[..]),
        ids: (!session.remap_root).then_some((uid, gid)),
        capabilities: &capabilities,
        filter: Filter::Set(seccomp.as_deref()),
    }
    .apply()
    .map_err(|e| e.to_string())?;
    if !session.remap_root {
        name_the_user(session);
    }
    if let Err(e) = std::env::set_current_dir(session.workdir) {
        eprintln!("berth: {}: {e}: starting in /", session.workdir);
        std::env::set_current_dir("/").map_err(|e| format!("cannot enter /: {e}"))?;
    }
    let shell = session
        .shells
        .iter()
        .find(|s| is_executable(s))
        .ok_or_else(|| {
            format!(
                "the container has none of the shells [login] shells names ({}): use an image with one",
                session.shells.join(", ")
            )
        })?;
    let argv = command_line(shell, session.command);
    let env = environment(session, shell);
    crate::sys::reset_signal_dispositions();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    let program = c(&argv.0)?;
    let args = argv.1.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let env = env.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let e = nix::unistd::execve(&program, &args, &env).unwrap_err();
    Err(format!("cannot run {}: {e}", argv.0))
}

/// Whether the session's terminal may be taken from its session (root's
/// power, before the container: the host's /proc): only the user's own
/// terminal that is the controlling terminal of the asking process (the
/// one sshd gave it), never one the user merely holds open.
fn terminal_is_theirs(session: &Session) -> bool {
    nix::sys::stat::fstat(session.stdio[0].as_raw_fd()).is_ok_and(|m| {
        m.st_uid == session.user.uid.as_raw()
            && controlling_terminal_of(session.peer) == Some(device_numbers(m.st_rdev))
    })
}

/// The (major, minor) of a device number.
fn device_numbers(rdev: u64) -> (u64, u64) {
    (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    )
}

/// The (major, minor) of process `pid`'s controlling terminal
/// (/proc/PID/stat's tty_nr), if it has one.
fn controlling_terminal_of(pid: Pid) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold anything): state, ppid,
    // pgrp, session, tty_nr.
    let tty: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(4)?
        .parse()
        .ok()?;
    (tty != 0).then(|| device_numbers(tty))
}

/// A regular file's text, at most 4 MiB, opened without following a link
/// or blocking (the user's own files: a FIFO there must not hang the
/// session's start); None otherwise.
fn read_small_file(path: &str) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(4 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Adds the user to the container's /etc/passwd and /etc/group when
/// missing (sftp-server, `whoami` and prompts need a name for the uid), as
/// the user: its files are theirs (a kept container's image files belong
/// to its user), and a link there leads nowhere they could not write
/// anyway. Where they cannot write, nothing is added.
fn name_the_user(session: &Session) {
    let user = session.user;
    let group = nix::unistd::Group::from_gid(user.gid)
        .ok()
        .flatten()
        .map_or_else(|| user.name.clone(), |g| g.name);
    let shell = session.shells.first().map_or("/bin/sh", String::as_str);
    let entries = [
        (
            "/etc/passwd",
            2,
            user.uid.as_raw(),
            format!(
                "{}:x:{}:{}::{}:{shell}\n",
                user.name, user.uid, user.gid, session.workdir
            ),
        ),
        (
            "/etc/group",
            2,
            user.gid.as_raw(),
            format!("{group}:x:{}:\n", user.gid),
        ),
    ];
    for (path, field, id, line) in entries {
        let Some(text) = read_small_file(path) else {
            continue;
        };
        let known = text
            .lines()
            .any(|l| l.split(':').nth(field) == Some(id.to_string().as_str()));
        if known {
            continue;
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        if let Ok(mut file) = opened {
            if file.metadata().is_ok_and(|m| m.is_file()) {
                let newline = if text.is_empty() || text.ends_with('\n') {
                    ""
                } else {
                    "\n"
                };
                let _ = file.write_all(format!("{newline}{line}").as_bytes());
            }
        }
    }
}

fn is_executable(path: &str) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// The program and its argv: a login shell (`-bash`), `SHELL -c COMMAND`,
/// or for sftp (sshd's subsystem, `internal-sftp` included) the image's
/// sftp-server, else the host's bound in.
fn command_line(shell: &str, command: Option<&str>) -> (String, Vec<String>) {
    let Some(command) = command else {
        let name = shell.rsplit('/').next().unwrap_or(shell);
        return (shell.to_string(), vec![format!("-{name}")]);
    };
    let program = command.split_whitespace().next().unwrap_or_default();
    if program == "internal-sftp" || program.rsplit('/').next() == Some("sftp-server") {
        let server = match is_executable(IMAGE_SFTP_SERVER) {
            true => IMAGE_SFTP_SERVER,
            false => SFTP_SERVER_IN_CONTAINER,
        };
        let mut argv = vec![server.to_string()];
        argv.extend(command.split_whitespace().skip(1).map(String::from));
        return (server.to_string(), argv);
    }
    (
        shell.to_string(),
        vec![shell.to_string(), "-c".into(), command.to_string()],
    )
}

/// The session's environment: the container's (image and devices), the
/// user's names and home, the shell, and what the user's side passed on.
fn environment(session: &Session, shell: &str) -> Vec<String> {
    let name = &session.user.name;
    let mut env: Vec<(String, String)> = vec![];
    let mut set = |k: &str, v: &str| {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.to_string()));
    };
    for entry in session
        .base
        .env
        .iter()
        .chain(&session.base.device_env)
        .chain(session.plan_env)
    {
        if let Some((k, v)) = entry.split_once('=') {
            set(k, v);
        }
    }
    set("HOME", session.workdir);
    set("USER", name);
    set("LOGNAME", name);
    set("SHELL", shell);
    for (k, v) in session.passed_env {
        if super::wire::PASSED_ON.contains(&k.as_str()) {
            set(k, v);
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_processs_controlling_terminal_is_read_as_its_device_numbers() {
        // /dev/pts/3 (136, 3), as stat and /proc/PID/stat encode it.
        assert_eq!(device_numbers(libc::makedev(136, 3)), (136, 3));
        assert_eq!(device_numbers((136 << 8) | 3), (136, 3));
        assert_eq!(device_numbers(libc::makedev(136, 300)), (136, 300));
        assert_eq!(controlling_terminal_of(Pid::from_raw(i32::MAX)), None);
    }

    #[test]
    fn a_session_runs_a_login_shell_a_command_or_sftp() {
        assert_eq!(
            command_line("/bin/bash", None),
            ("/bin/bash".to_string(), vec!["-bash".to_string()])
        );
        assert_eq!(
            command_line("/bin/sh", Some("echo hi; exit 3")).1,
            ["/bin/sh", "-c", "echo hi; exit 3"]
        );
        // Neither runs through the shell (whose profile could write into
        // the sftp protocol); which server depends on this root's files.
        for asked in ["internal-sftp", "/usr/lib/openssh/sftp-server -l INFO"] {
            let (program, argv) = command_line("/bin/sh", Some(asked));
            assert!(
                program == IMAGE_SFTP_SERVER || program == SFTP_SERVER_IN_CONTAINER,
                "{program}"
            );
            assert_eq!(argv[0], program);
            assert_eq!(argv.len(), if asked.contains("-l") { 3 } else { 1 });
        }
    }
}
