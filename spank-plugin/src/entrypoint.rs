//! `--container-entrypoint`, as pyxis runs it: once per step on a node,
//! when the step's container (or its view into a named one) is ready and
//! before any task joins it. The image's Entrypoint runs in the container
//! as the job's user, confined as the tasks are, in the tasks' working
//! directory, with the image's environment plus `--container-env`'s
//! variables (not the whole job's), its output kept aside (shown with
//! `--container-entrypoint-log`, or when it fails); as its command it gets
//! `berth-entrypoint` (entrypoint/main.rs), which writes the environment
//! the entrypoint leaves. That environment takes the image's place for
//! the step's tasks; what the entrypoint changed in the container's files
//! stays.
//!
//! The process tree: the task that made the container (root, single-
//! threaded) forks a child that enters the container like a task does
//! (`remote::enter_container`) and forks the entrypoint into its pid
//! namespace, waits for it (at most [`TIMEOUT`]) and says how it ended.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};

use berth::process::confine::{Confinement, Filter};
use berth::slurm::record::KeeperRecord;

use crate::ffi;
use crate::options::ContainerOptions;
use crate::remote::{task_capabilities, task_workdir};
use crate::state::record_keeper;
use berth::process::join::{
    enter_container, enter_remapped_user_namespace, remapped_user_namespace,
};

/// `berth-entrypoint`, built static by build.rs.
static CAPTURE_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-entrypoint"));

/// How long an entrypoint may take to reach its command (one that never
/// does, such as a server's, fails the step then).
const TIMEOUT: Duration = Duration::from_secs(300);

/// How much of the entrypoint's output is shown (its end).
const LOG_TAIL: u64 = 64 * 1024;

/// The most environment an entrypoint may leave (it is kept in the
/// step's record, on the node's /run, and set in every task): bytes,
/// variables, bytes of one variable.
const ENV_MAX: u64 = 1024 * 1024;
const ENV_MAX_ENTRIES: usize = 4096;
const ENV_MAX_ENTRY: usize = 128 * 1024;

/// Variables a shell sets for itself, not the entrypoint's to pass on.
const SHELL_OWN: [&str; 4] = ["_", "SHLVL", "PWD", "OLDPWD"];

/// With `--container-entrypoint` and an image that has one: runs the
/// entrypoint for the step whose container `reply` is (recorded in
/// `state_dir`), and returns the record with the environment it left
/// (`entrypoint_env`) or why it failed (`entrypoint_failed`), for every
/// task of the step. Otherwise the record as it was.
pub(crate) fn run_if_asked(
    sp: ffi::spank_t,
    options: &ContainerOptions,
    mut reply: KeeperRecord,
    (uid, gid): (u32, u32),
    state_dir: &Path,
) -> Result<KeeperRecord, String> {
    if !options.entrypoint.is_on()
        || reply.entrypoint.is_empty()
        || reply.entrypoint_env.is_some()
        || reply.entrypoint_failed.is_some()
    {
        return Ok(reply);
    }
    // On record first, so that the step's end finds the container if this
    // task is killed meanwhile; its other tasks, which wait for this one,
    // then fail.
    let unfinished = KeeperRecord {
        entrypoint_failed: Some(
            "--container-entrypoint: the task running the image's entrypoint ended before it finished".into(),
        ),
        ..reply.clone()
    };
    record_keeper(state_dir, &unfinished)?;
    let shown = reply.entrypoint.join(" ");
    let ran = reply.seccomp_program().and_then(|seccomp| {
        EntrypointRun {
            env: entrypoint_environment(sp, &reply),
            workdir: task_workdir(&reply, options).0,
            uid,
            gid,
            groups: ffi::job_supplementary_gids(sp),
            seccomp,
        }
        .start(&reply)
    });
    match ran {
        Ok(Ran {
            left: Some(Left { workdir, env }),
            log,
            ..
        }) => {
            if options.entrypoint_log {
                show_on_stderr(&log);
            }
            reply.entrypoint_env = Some(env);
            reply.entrypoint_workdir = workdir;
            reply.entrypoint_failed = None;
        }
        Ok(Ran {
            left: None,
            log,
            end,
        }) => {
            for line in String::from_utf8_lossy(&log).lines() {
                ffi::error(&format!("berth: entrypoint: {line}"));
            }
            reply.entrypoint_failed = Some(format!(
                "--container-entrypoint: the image's entrypoint ({shown}) {end} before it ran the command{}; if the image has an unusual entrypoint, try --no-container-entrypoint",
                match log.is_empty() {
                    true => "",
                    false => " (its output is above)",
                }
            ));
        }
        Err(e) => reply.entrypoint_failed = Some(e),
    }
    Ok(reply)
}

/// The entrypoint's environment: the image's, what the devices need, the
/// job's values of `--container-env`'s variables, and the user's HOME
/// (/root when remapped) unless the image sets one.
fn entrypoint_environment(sp: ffi::spank_t, reply: &KeeperRecord) -> Vec<String> {
    let mut env: Vec<String> = reply.env.clone();
    let set = |env: &mut Vec<String>, name: &str, value: String| {
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(format!("{name}={value}"));
    };
    for entry in &reply.device_env {
        if let Some((name, value)) = entry.split_once('=') {
            set(&mut env, name, value.to_string());
        }
    }
    for name in &reply.job_env {
        if let Some(value) = ffi::getenv(sp, name) {
            set(&mut env, name, value);
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = match reply.remap_root {
            true => Some("/root".to_string()),
            false => ffi::getenv(sp, "HOME"),
        };
        if let Some(home) = home {
            env.push(format!("HOME={home}"));
        }
    }
    env
}

/// One run of an entrypoint.
struct EntrypointRun {
    env: Vec<String>,
    workdir: String,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    seccomp: Option<Vec<u8>>,
}

/// What a run left.
struct Ran {
    /// What `berth-entrypoint` wrote; None if it never ran.
    left: Option<Left>,
    /// The end of the entrypoint's output.
    log: Vec<u8>,
    /// How the entrypoint ended, in words.
    end: String,
}

/// Where and with what the entrypoint ran its command.
#[derive(Debug, PartialEq)]
struct Left {
    /// Its working directory (an absolute path), if known.
    workdir: Option<String>,
    /// Its environment, `NAME=value`.
    env: Vec<String>,
}

/// The descriptors the entrypoint inherits.
struct Memfds {
    program: File,
    env: File,
    log: File,
}

impl EntrypointRun {
    /// Runs the entrypoint in the container of `reply`, from a child of
    /// this process (root, single-threaded: a Slurm task before its exec).
    fn start(&self, reply: &KeeperRecord) -> Result<Ran, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("--container-entrypoint: cannot {what}: {e}")
        };
        // Inherited by the entrypoint (not close-on-exec); closed here
        // when this returns, before the task goes on.
        let memfd = |name: &std::ffi::CStr, flags: MemFdCreateFlag| {
            memfd_create(name, flags)
                .map(File::from)
                .map_err(|e| fail("create a memfd", &e))
        };
        let exec_flag = MemFdCreateFlag::from_bits_retain(libc::MFD_EXEC);
        // MFD_EXEC where the kernel knows it (6.3+, which may default to noexec memfds).
        let mut program = memfd(c"berth-entrypoint", exec_flag)
            .or_else(|_| memfd(c"berth-entrypoint", MemFdCreateFlag::empty()))?;
        program
            .write_all(CAPTURE_PROGRAM)
            .map_err(|e| fail("write berth-entrypoint", &e))?;
        let fds = Memfds {
            program,
            env: memfd(c"berth-entrypoint-env", MemFdCreateFlag::empty())?,
            log: memfd(c"berth-entrypoint-log", MemFdCreateFlag::empty())?,
        };
        let (end_r, end_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| fail("create a pipe", &e))?;
        // SAFETY: the caller is single-threaded (a Slurm task before exec).
        #[allow(unsafe_code)]
        let forked = unsafe { berth::sys::fork() }.map_err(|e| fail("fork", &e))?;
        let child = match forked {
            ForkResult::Child => {
                drop(end_r);
                let end = keep_only(&[
                    fds.program.as_raw_fd(),
                    fds.env.as_raw_fd(),
                    fds.log.as_raw_fd(),
                    end_w.as_raw_fd(),
                ])
                .map_or_else(|e| e, |()| self.watch_in_container(reply, &fds));
                let _ = nix::unistd::write(&end_w, end.as_bytes());
                berth::sys::exit_child(0);
            }
            ForkResult::Parent { child } => child,
        };
        drop(end_w);
        let mut end = String::new();
        let _ = File::from(end_r).read_to_string(&mut end);
        let _ = waitpid(child, None);
        if end.is_empty() {
            end = "could not be started (the helper process died)".into();
        }
        let captured = read_tail(&fds.env, ENV_MAX + 1);
        let too_much = || {
            format!(
                "--container-entrypoint: the image's entrypoint left an environment of over {} KiB or {ENV_MAX_ENTRIES} variables",
                ENV_MAX / 1024
            )
        };
        if captured.len() as u64 > ENV_MAX {
            return Err(too_much());
        }
        let left = match captured.is_empty() {
            true => None,
            false => Some(left_from(&captured).ok_or_else(too_much)?),
        };
        Ok(Ran {
            left,
            log: read_tail(&fds.log, LOG_TAIL),
            end,
        })
    }

    /// In the child: enters the container, forks the entrypoint into it and
    /// waits for it; how it ended, in words.
    fn watch_in_container(&self, reply: &KeeperRecord, fds: &Memfds) -> String {
        // Gone with the task that waits for it.
        if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
            return "could not be started: cannot tie it to the task".into();
        }
        // Remapped: the user namespace, made with the host's /proc.
        let userns = match reply.remap_root {
            true => match remapped_user_namespace(self.uid, self.gid) {
                Ok(userns) => Some(userns),
                Err(e) => return format!("could not be started: {e}"),
            },
            false => None,
        };
        if let Err(e) = enter_container(reply) {
            return e;
        }
        let (error_r, error_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => pipe,
            Err(e) => return format!("could not be started: {e}"),
        };
        // SAFETY: this child is single-threaded.
        #[allow(unsafe_code)]
        let entrypoint = match unsafe { berth::sys::fork() } {
            Err(e) => return format!("could not be started: {e}"),
            Ok(ForkResult::Child) => {
                drop(error_r);
                let error = self.exec(reply, fds, userns.as_ref());
                let _ = nix::unistd::write(&error_w, error.as_bytes());
                berth::sys::exit_child(127);
            }
            Ok(ForkResult::Parent { child }) => child,
        };
        drop(error_w);
        let end = wait_with_deadline(entrypoint);
        // What went wrong before its exec, if anything: the pipe closed on
        // exec, and nothing else holds it once the process has ended.
        let mut error = String::new();
        let _ = File::from(error_r).read_to_string(&mut error);
        match error.is_empty() {
            true => end,
            false => error,
        }
    }

    /// In the entrypoint's process: becomes the job's user, confined as a
    /// task, and execs the entrypoint; returns only what went wrong.
    fn exec(
        &self,
        reply: &KeeperRecord,
        fds: &Memfds,
        userns: Option<&std::os::fd::OwnedFd>,
    ) -> String {
        match self.prepare(reply, fds, userns) {
            Err(e) => e,
            Ok((path, argv, envp)) => match nix::unistd::execve(&path, &argv, &envp) {
                Ok(never) => match never {},
                Err(e) => format!("could not be run ({}: {e})", path.to_string_lossy()),
            },
        }
    }

    /// Everything before the exec: descriptors, ids, working directory,
    /// confinement; the program, its argv and environment.
    fn prepare(
        &self,
        reply: &KeeperRecord,
        fds: &Memfds,
        userns: Option<&std::os::fd::OwnedFd>,
    ) -> Result<Exec, String> {
        use std::ffi::CString;
        let cstring = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
        // Nothing of slurmstepd's but the task's stdio: only the program
        // and the memfd the environment goes to stay open across the exec.
        berth::sys::cloexec_from(3).map_err(|e| format!("cannot close its descriptors: {e}"))?;
        for kept in [&fds.program, &fds.env] {
            nix::fcntl::fcntl(
                kept.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map_err(|e| format!("cannot pass its descriptors: {e}"))?;
        }
        let capabilities = task_capabilities(reply);
        // As the job's user from here on, with the job's groups.
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(|e| format!("cannot set groups: {e}"))?;
        berth::caps::limit_bounding_set(&capabilities).map_err(|e| e.to_string())?;
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        nix::unistd::setresgid(gid, gid, gid)
            .map_err(|e| format!("cannot become gid {gid}: {e}"))?;
        nix::unistd::setresuid(uid, uid, uid)
            .map_err(|e| format!("cannot become uid {uid}: {e}"))?;
        // Its input nothing, its output kept aside (opened as the user).
        let null = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
        for (from, to) in [
            (null.as_raw_fd(), 0),
            (fds.log.as_raw_fd(), 1),
            (fds.log.as_raw_fd(), 2),
        ] {
            nix::unistd::dup2(from, to).map_err(|e| format!("cannot set up its output: {e}"))?;
        }
        // Gone with the process that waits for it (set after the ids
        // changed, which clear it).
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| format!("cannot tie it to its watcher: {e}"))?;
        // As the tasks start (an image's directory the user may not enter: /).
        if std::env::set_current_dir(&self.workdir).is_err() {
            std::env::set_current_dir("/").map_err(|e| format!("cannot enter /: {e}"))?;
        }
        if let Some(userns) = userns {
            enter_remapped_user_namespace(userns)?;
        }
        Confinement {
            groups: None,
            ids: None,
            capabilities: &capabilities,
            filter: Filter::Set(self.seccomp.as_deref()),
        }
        .apply()
        .map_err(|e| e.to_string())?;
        let path = find_program(&reply.entrypoint[0], &self.env)?;
        let mut argv = reply
            .entrypoint
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>, _>>()?;
        argv.push(cstring(&format!(
            "/proc/self/fd/{}",
            fds.program.as_raw_fd()
        ))?);
        let envp = self
            .env
            .iter()
            .map(|e| cstring(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((cstring(&path)?, argv, envp))
    }
}

/// Waits for the entrypoint's process (at most [`TIMEOUT`], from before its
/// exec: it may block there on a mount the user serves); how it ended.
fn wait_with_deadline(entrypoint: nix::unistd::Pid) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match waitpid(entrypoint, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => return format!("exited with status {code}"),
            Ok(WaitStatus::Signaled(_, signal, _)) => return format!("was killed by {signal}"),
            Ok(_) => {}
            Err(e) => return format!("could not be waited for: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = kill(entrypoint, Signal::SIGKILL);
            let _ = waitpid(entrypoint, None);
            return format!("did not run its command within {} s", TIMEOUT.as_secs());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// In the forked child, first: nothing of slurmstepd's stays open (its
/// stdio becomes /dev/null, every other descriptor but `keep` is closed),
/// so a child that outlives its task holds none of the step's pipes,
/// sockets or locks.
fn keep_only(keep: &[std::os::fd::RawFd]) -> Result<(), String> {
    use std::os::fd::IntoRawFd;
    let fail = |e: &dyn std::fmt::Display| format!("could not be started: {e}");
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| fail(&e))?
        .into_raw_fd();
    for stdio in 0..3 {
        if null != stdio {
            nix::unistd::dup2(null, stdio).map_err(|e| fail(&e))?;
        }
    }
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| fail(&e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Writes the entrypoint's output to the task's stderr, where it would
/// have gone (waiting while a terminal's non-blocking descriptor is full).
fn show_on_stderr(mut log: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.is_empty() && Instant::now() < deadline {
        match nix::unistd::write(std::io::stderr(), log) {
            Ok(n) => log = &log[n..],
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => return,
        }
    }
}

/// A program to exec: its path, argv and environment.
type Exec = (
    std::ffi::CString,
    Vec<std::ffi::CString>,
    Vec<std::ffi::CString>,
);

/// `program` as exec finds it: a path as it is, a bare name in the
/// entrypoint's PATH (as Docker runs an Entrypoint).
fn find_program(program: &str, env: &[String]) -> Result<String, String> {
    if program.contains('/') {
        return Ok(program.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| format!("{dir}/{program}"))
        .find(|candidate| {
            nix::unistd::access(candidate.as_str(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
        .ok_or_else(|| format!("could not be run ({program}: not found in PATH {path})"))
}

/// Up to the last `limit` bytes of a memfd's contents.
fn read_tail(file: &File, limit: u64) -> Vec<u8> {
    let mut file = file;
    let size = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(size.saturating_sub(limit)))
        .is_ok()
    {
        let _ = file.take(limit).read_to_end(&mut bytes);
    }
    bytes
}

/// What `berth-entrypoint` wrote: its working directory, then its
/// `NAME=value` entries, each ending in a NUL byte. Variables that are not
/// valid UTF-8 or whose name is not a shell name are left out, as are the
/// shell's own; None past the limits.
fn left_from(text: &[u8]) -> Option<Left> {
    let mut records = text.split(|b| *b == 0);
    let workdir = records
        .next()
        .and_then(|w| std::str::from_utf8(w).ok())
        .filter(|w| w.starts_with('/'))
        .map(String::from);
    let mut env = Vec::new();
    for record in records.filter(|r| !r.is_empty()) {
        if record.len() > ENV_MAX_ENTRY || env.len() == ENV_MAX_ENTRIES {
            return None;
        }
        let Ok(entry) = std::str::from_utf8(record) else {
            continue;
        };
        if entry
            .split_once('=')
            .is_some_and(|(name, _)| is_shell_name(name) && !SHELL_OWN.contains(&name))
        {
            env.push(entry.to_string());
        }
    }
    Some(Left { workdir, env })
}

/// A name a shell can export: a letter or `_`, then letters, digits, `_`.
fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entrypoints_environment_is_read_without_the_shells_own() {
        let text = b"/workspace\0PATH=/bin\0_=/proc/self/fd/5\0SHLVL=1\0DOCKER_HOST=tcp://docker:2375\0PWD=/\0junk\0\0";
        let left = left_from(text).unwrap();
        assert_eq!(left.workdir.as_deref(), Some("/workspace"));
        assert_eq!(left.env, ["PATH=/bin", "DOCKER_HOST=tcp://docker:2375"]);
        // An entrypoint that cleared its environment (`env -i "$@"`) ran.
        assert_eq!(
            left_from(b"/\0"),
            Some(Left {
                workdir: Some("/".into()),
                env: vec![]
            })
        );
        // Odd names and bytes are left out; too many variables are refused.
        let odd = b"\0BAD-NAME=1\x001X=2\0\xff=3\0V=\xfe\0OK=1\0";
        assert_eq!(left_from(odd).unwrap().env, ["OK=1"]);
        let many: Vec<u8> = (0..=ENV_MAX_ENTRIES)
            .flat_map(|i| format!("V{i}=x\0").into_bytes())
            .collect();
        assert_eq!(left_from(&[b"/\0".as_slice(), &many].concat()), None);
    }

    #[test]
    fn a_bare_entrypoint_is_found_in_its_path() {
        let env = ["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(find_program("sh", &env).unwrap(), "/bin/sh");
        assert_eq!(find_program("/x/y", &env).unwrap(), "/x/y");
        let missing = find_program("no-such-program-here", &env).unwrap_err();
        assert!(
            missing.contains("not found in PATH /nonexistent:/bin"),
            "{missing}"
        );
    }

    #[test]
    fn only_the_end_of_a_long_log_is_kept() {
        let mut file = File::from(memfd_create(c"t", MemFdCreateFlag::empty()).unwrap());
        file.write_all(b"0123456789").unwrap();
        assert_eq!(read_tail(&file, 4), b"6789");
        assert_eq!(read_tail(&file, u64::MAX), b"0123456789");
    }
}
