//! The shared server's test kit: OpenSSH's sshd on a loopback port with its
//! own config and host key, `ForceCommand berth login`, key authentication
//! for the test users; `berth login-service` serving the sandbox's
//! berth.toml; and a terminal (a pty pair) to drive `ssh -tt` as a person
//! at a keyboard would: typing, Ctrl-C, resizing the window.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{berth_path, free_port, wait_until, Sandbox};

/// Where the sandbox's login service listens (`[login] socket`).
pub fn login_socket(s: &Sandbox) -> PathBuf {
    s.path().join("run/login.sock")
}

/// A daemon the kit started, killed when dropped (also when a test fails
/// half way through starting the others).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// sshd and the login service of one sandbox.
pub struct LoginServer {
    users: Vec<String>,
    config: PathBuf,
    // Dropped in this order, after the containers are stopped.
    _sshd: Daemon,
    _service: Daemon,
    port: u16,
    dir: PathBuf,
}

impl LoginServer {
    /// Starts the login service of `s` (whose berth.toml has `[login]`
    /// with [`login_socket`]) and an sshd letting `users` in with the
    /// kit's key, each landing in `berth login`.
    pub fn start(s: &Sandbox, users: &[&str]) -> LoginServer {
        Self::start_with_plain(s, users, &[])
    }

    /// As [`LoginServer::start`], and lets `plain_users` in without
    /// `berth login` (a host shell, as a server without berth gives).
    pub fn start_with_plain(s: &Sandbox, users: &[&str], plain_users: &[&str]) -> LoginServer {
        Self::start_full(s, users, plain_users, &[])
    }

    /// As [`LoginServer::start`], the service with `env` in its environment
    /// (e.g. a test cluster's SLURM_CONF).
    pub fn start_with_env(s: &Sandbox, users: &[&str], env: &[(&str, &Path)]) -> LoginServer {
        Self::start_full(s, users, &[], env)
    }

    fn start_full(
        s: &Sandbox,
        users: &[&str],
        plain_users: &[&str],
        env: &[(&str, &Path)],
    ) -> LoginServer {
        for user in users.iter().chain(plain_users) {
            unlock_for_keys(user);
        }
        let service_log = std::fs::File::create(s.path().join("login-service.log")).unwrap();
        let service = Command::new(berth_path())
            .arg("--config")
            .arg(s.config())
            .args(["-v", "login-service"])
            .env_remove("BERTH_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(service_log.try_clone().unwrap())
            .stderr(service_log)
            .spawn()
            .unwrap();
        let mut service = Daemon(service);
        let log = s.path().join("login-service.log");
        wait_until("the login service listens", || {
            if let Ok(Some(status)) = service.0.try_wait() {
                panic!(
                    "the login service ended ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            login_socket(s).exists()
        });
        let dir = s.path().join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        for key in ["host_key", "client_key"] {
            if dir.join(key).exists() {
                continue; // a server started again in the same sandbox
            }
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .expect("ssh-keygen (apt-get install openssh-client)");
            assert!(made.success());
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        std::fs::set_permissions(
            dir.join("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin no\nAllowUsers {users}\nSubsystem sftp /usr/lib/openssh/sftp-server\n\
                 ForceCommand {berth} --config {berth_config} login\nLogLevel VERBOSE\n\
                 SetEnv BERTH_CONFIG={berth_config}\n{plain}",
                dir = dir.display(),
                users = users.iter().chain(plain_users).copied().collect::<Vec<_>>().join(" "),
                plain = plain_users
                    .iter()
                    .map(|u| format!("Match User {u}\n    ForceCommand none\n"))
                    .collect::<String>(),
                berth = berth_path().display(),
                berth_config = s.config().display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sshd (apt-get install openssh-server)");
        let sshd = Daemon(sshd);
        wait_until("sshd listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        LoginServer {
            _sshd: sshd,
            _service: service,
            port,
            dir,
            config: s.config(),
            users: users
                .iter()
                .chain(plain_users)
                .map(|u| u.to_string())
                .collect(),
        }
    }

    /// `ssh USER@127.0.0.1 ARGS` with the kit's key, ended after 2
    /// minutes (a session that never ends fails its test, not the run).
    pub fn ssh(&self, user: &str, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "ssh"])
            .args(self.client_options("-p"))
            .arg(format!("{user}@127.0.0.1"))
            .args(args);
        c
    }

    /// The whole `ssh` command line for `user` (for a benchmark to run).
    pub fn ssh_command_line(&self, user: &str) -> Vec<String> {
        std::iter::once("ssh".to_string())
            .chain(self.client_options("-p"))
            .chain([format!("{user}@127.0.0.1")])
            .collect()
    }

    /// `ssh -tt USER@127.0.0.1` for a [`Terminal`] (which has its own
    /// deadlines: `timeout` would take ssh out of the terminal's
    /// foreground process group).
    pub fn ssh_on_terminal(&self, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.client_options("-p"))
            .arg("-tt")
            .arg(format!("{user}@127.0.0.1"));
        c
    }

    /// `scp ARGS` (the sftp protocol, as OpenSSH 9 does) with the kit's
    /// key; remote paths as `USER@127.0.0.1:PATH`.
    pub fn scp(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "scp"])
            .args(self.client_options("-P"))
            .args(args);
        c
    }

    /// `sftp -b BATCH USER@127.0.0.1` with the kit's key.
    pub fn sftp(&self, user: &str, batch: &Path) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "sftp"])
            .args(self.client_options("-P"))
            .arg("-b")
            .arg(batch)
            .arg(format!("{user}@127.0.0.1"));
        c
    }

    fn client_options(&self, port_flag: &str) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            self.dir.join("client_key").display().to_string(),
            port_flag.to_string(),
            self.port.to_string(),
        ])
        .collect()
    }

    /// sshd's and the service's logs, for a failed assertion's message.
    pub fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- sshd ---\n{}\n--- login service ---\n{}",
            read(self.dir.join("sshd.log")),
            read(self.dir.parent().unwrap().join("login-service.log"))
        )
    }

    /// `berth stop` of `user`'s login container (as root).
    pub fn stop_container(&self, user: &str) -> std::process::Output {
        Command::new(berth_path())
            .arg("--config")
            .arg(&self.config)
            .args(["stop", "--user", user])
            .env_remove("BERTH_CONFIG")
            .output()
            .unwrap()
    }
}

impl Drop for LoginServer {
    fn drop(&mut self) {
        for user in self.users.clone() {
            let _ = self.stop_container(&user);
        }
    }
}

/// Lets `user` log in with a key: an account whose password is locked
/// (`!`, useradd's default) is refused by sshd even then; `*` (no
/// password at all) is not.
fn unlock_for_keys(user: &str) {
    static CHANGING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CHANGING.lock().unwrap_or_else(|e| e.into_inner());
    let shadow = Command::new("getent")
        .args(["shadow", user])
        .output()
        .unwrap();
    let entry = String::from_utf8_lossy(&shadow.stdout).into_owned();
    if entry.split(':').nth(1).is_some_and(|p| p.starts_with('!')) {
        let changed = Command::new("usermod")
            .args(["-p", "*", user])
            .status()
            .unwrap();
        assert!(changed.success(), "usermod -p '*' {user}");
    }
}

/// A program on a terminal of its own (a pty pair), its session leader:
/// what it prints is read from the terminal, what is typed is written to it.
pub struct Terminal {
    master: std::fs::File,
    child: Child,
    seen: String,
}

impl Terminal {
    /// Starts `command` on a new terminal of `rows` x `cols`.
    pub fn spawn(mut command: Command, rows: u16, cols: u16) -> Terminal {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let slave: OwnedFd = pty.slave;
        for (i, stdio) in [0, 1, 2]
            .into_iter()
            .map(|_| slave.try_clone().unwrap())
            .enumerate()
        {
            match i {
                0 => command.stdin(Stdio::from(stdio)),
                1 => command.stdout(Stdio::from(stdio)),
                _ => command.stderr(Stdio::from(stdio)),
            };
        }
        // SAFETY: between fork and exec only async-signal-safe calls.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop(slave);
        Terminal {
            master: std::fs::File::from(pty.master),
            child,
            seen: String::new(),
        }
    }

    /// Types `text`.
    pub fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Reads until what was printed since the last match holds `needle`
    /// (up to 20 s): that text.
    pub fn read_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(at) = self.seen.find(needle) {
                let upto = at + needle.len();
                let text = self.seen[..upto].to_string();
                self.seen.drain(..upto);
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{needle:?} not printed; the terminal showed:\n{}",
                self.seen
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = left.as_millis().min(1000) as u16;
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) == 0 {
                continue;
            }
            let mut buffer = [0u8; 4096];
            match self.master.read(&mut buffer) {
                Ok(0) | Err(_) => panic!(
                    "the terminal closed before {needle:?}; it showed:\n{}",
                    self.seen
                ),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    }

    /// Resizes the window (the kernel tells the terminal's foreground
    /// process group: ssh, which tells the server).
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize through a valid pointer.
        let ret = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(ret, 0, "TIOCSWINSZ");
    }

    /// Waits (up to 20 s) for the program to end: its status.
    pub fn wait(mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the program did not end; the terminal showed:\n{}",
                    self.seen
                );
            }
            // Keep the terminal drained: a full one blocks the writer.
            let mut buffer = [0u8; 4096];
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)).unwrap_or(0) > 0 {
                if let Ok(n) = self.master.read(&mut buffer) {
                    self.seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }
        }
    }
}

impl Terminal {
    /// Kills the program (as a dropped connection would end it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A third user whose login shell is berth itself (made, or given that
/// shell, when needed): its name and uid. sshd runs a login shell as
/// `-berth`, a command as `berth -c COMMAND`.
pub fn login_shell_user() -> (String, u32) {
    let name = "berth-login3";
    static CHANGING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CHANGING.lock().unwrap_or_else(|e| e.into_inner());
    let shell = berth_path();
    let entry = Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap();
    let entry = String::from_utf8_lossy(&entry.stdout).into_owned();
    if entry.is_empty() {
        let made = Command::new("useradd")
            .args(["--create-home", "--shell"])
            .arg(&shell)
            .arg(name)
            .status()
            .unwrap();
        assert!(made.success(), "useradd {name}");
    } else if entry.trim_end().rsplit(':').next() != Some(&*shell.to_string_lossy()) {
        let changed = Command::new("usermod")
            .arg("--shell")
            .arg(&shell)
            .arg(name)
            .status()
            .unwrap();
        assert!(changed.success(), "usermod --shell {name}");
    }
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (name.to_string(), uid)
}
