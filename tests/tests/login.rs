//! The shared GPU server (issue 15): OpenSSH's sshd with `ForceCommand
//! berth login`, `berth login-service` as root, two users with keys. Each
//! lands in their own persistent container with /workspace and its 0700
//! /workspace/data, their own GPU only; sessions share the running
//! container; it survives a restart; a terminal session has job control,
//! Ctrl-C, resizes and its exit code; scp and sftp work without an
//! sftp-server in the image; every start and end is in the audit trail.

use std::path::{Path, PathBuf};

use berth_e2e::ssh::{login_shell_user, login_socket, LoginServer, Terminal};
use berth_e2e::*;

/// A shared server in a sandbox: both test users listed, their homes and
/// data directories under `<sandbox>/homes` and `<sandbox>/data`, fake GPUs
/// nvidia0..2 with 0 for the test user, 1 for the second, 2 reserved.
struct Site {
    s: Sandbox,
    users: [(String, u32); 2],
    audit: PathBuf,
}

impl Site {
    fn new(login_extra: &str) -> Site {
        let s = Sandbox::new();
        let image = s.standard_image();
        Site::with_image(s, &image, login_extra)
    }

    /// With `image` as `[login] image`.
    fn with_image(s: Sandbox, image: &Path, login_extra: &str) -> Site {
        let (uid, _) = test_user();
        let users = [(TEST_USER.to_string(), uid), second_test_user()];
        for (name, uid) in &users {
            for dir in [
                s.path().join("homes").join(name),
                s.path().join("data").join(format!("{name}_data")),
            ] {
                std::fs::create_dir_all(&dir).unwrap();
                std::os::unix::fs::chown(&dir, Some(*uid), Some(*uid)).unwrap();
                set_mode(&dir, 0o700);
            }
            set_mode(&s.path().join("homes").join(name), 0o755);
        }
        let dev = s.path().join("dev");
        make_char_devices(
            &dev,
            &[
                ("nvidia0", 195, 0),
                ("nvidia1", 195, 1),
                ("nvidia2", 195, 2),
                ("nvidiactl", 195, 255),
            ],
        );
        let audit_dir = s.path().join("audit");
        std::fs::create_dir(&audit_dir).unwrap();
        let audit = audit_dir.join("audit.jsonl");
        s.write_config(&format!(
            r#"[audit]
file = "{audit}"
[gpus]
devices = ["{dev}/nvidia0", "{dev}/nvidia1", "{dev}/nvidia2"]
cdi_spec_dirs = []
reserved = [2]
[gpus.users]
"{user1}" = [0]
"{user2}" = [1]
[login]
image = "{image}"
users = ["{user1}", "{user2}"]
socket = "{socket}"
idle_stop = "1h"
{login_extra}
[[login.mounts]]
source = "{root}/homes/{{user}}"
destination = "/workspace"
owned_by_user = true
[[login.mounts]]
source = "{root}/data/{{user}}_data"
destination = "/workspace/data"
owned_by_user = true
mode = "0700"
"#,
            audit = audit.display(),
            dev = dev.display(),
            user1 = users[0].0,
            user2 = users[1].0,
            image = image.display(),
            socket = login_socket(&s).display(),
            root = s.path().display(),
        ));
        Site { s, users, audit }
    }

    fn user(&self, i: usize) -> &str {
        &self.users[i].0
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.s
            .path()
            .join("data")
            .join(format!("{}_data", self.user(i)))
    }

    fn home(&self, i: usize) -> PathBuf {
        self.s.path().join("homes").join(self.user(i))
    }

    fn start(&self) -> LoginServer {
        LoginServer::start(&self.s, &[self.user(0), self.user(1)])
    }

    /// The audit trail's lines about login containers and sessions.
    fn login_trail(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["origin"] == "login")
            .collect()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `command` over ssh as user `i`: exit code and output (both streams).
fn ssh(site: &Site, server: &LoginServer, i: usize, command: &str) -> (i32, String) {
    let out = server.ssh(site.user(i), &[command]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn each_user_lands_in_their_own_container_with_their_own_gpu() {
    require_root!();
    let site = Site::new("");
    std::fs::write(site.data_dir(0).join("mine"), "user one's data\n").unwrap();
    let server = site.start();
    let (code, text) = ssh(
        &site,
        &server,
        0,
        "id -u; pwd; echo home=$HOME; cat /workspace/data/mine; ls /dev; grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status",
    );
    assert_eq!(code, 0, "{text}\n{}", server.logs());
    let uid = site.users[0].1;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            uid.to_string().as_str(),
            "/workspace",
            "home=/workspace",
            "user one's data"
        ],
        "{text}"
    );
    // Their own GPU (and the driver's control node), never the reserved one.
    assert!(
        text.contains("nvidia0\n") && !text.contains("nvidia1") && !text.contains("nvidia2"),
        "{text}"
    );
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    // `ssh host COMMAND` ends with the command's exit code.
    assert_eq!(ssh(&site, &server, 0, "exit 3").0, 3);

    // The second user: their GPU, their data; the first user's data
    // directory is nowhere in their container, by its host path or another.
    let host_data = site.data_dir(0);
    let (code, text) = ssh(
        &site,
        &server,
        1,
        &format!(
            "ls /dev; ls -a /workspace/data; test -e {} && echo SEEN; grep -rl \"user one\" /workspace 2>/dev/null; echo done",
            host_data.display()
        ),
    );
    assert_eq!(code, 0, "{text}\n{}", server.logs());
    assert!(
        text.contains("nvidia1\n") && !text.contains("nvidia0") && !text.contains("nvidia2"),
        "{text}"
    );
    assert!(
        !text.contains("mine") && !text.contains("SEEN") && !text.contains("user one"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("done"), "{text}");
}

#[test]
fn sessions_share_one_container_that_keeps_its_files_across_restarts() {
    require_root!();
    let site = Site::new("");
    let server = site.start();
    // Session A leaves a mark in /tmp and a process running.
    let mut a = server
        .ssh(site.user(0), &["echo a > /tmp/a-was-here; exec sleep 1234"])
        .spawn()
        .unwrap();
    wait_until("session A has started", || {
        std::fs::read_to_string(&site.audit).is_ok_and(|t| t.contains("sleep 1234"))
    });
    // Session B, at the same time: the same /tmp, A's process; it changes
    // the image's files (its writable layer).
    let (code, text) = ssh(
        &site,
        &server,
        0,
        "cat /tmp/a-was-here; ps -o args | grep -c '^sleep 1234'; echo kept > /etc/kept",
    );
    assert_eq!(code, 0, "{text}\n{}", server.logs());
    assert_eq!(text, "a\n1\n", "{}", server.logs());
    // The other user sees none of it.
    let (_, text) = ssh(
        &site,
        &server,
        1,
        "cat /tmp/a-was-here /etc/kept; ps -o args",
    );
    assert!(
        !text.contains("sleep 1234") && !text.contains("kept\n"),
        "{text}"
    );

    // Root stops it: A's session ends; the container is stopped, its
    // layer kept.
    let out = server.stop_container(site.user(0));
    assert!(out.status.success(), "{}", stderr(&out));
    let status = a.wait().unwrap();
    assert!(!status.success());
    let ps = site.s.berth(&["ps", "--user", site.user(0)]);
    assert!(stdout(&ps).contains("stopped"), "{}", stdout(&ps));
    // The next login starts it again, with the files.
    let (code, text) = ssh(&site, &server, 0, "cat /etc/kept /tmp/a-was-here");
    assert_eq!((code, text.as_str()), (0, "kept\na\n"), "{}", server.logs());

    // The trail: the container started twice and stopped once; three
    // sessions of this user started and ended (A killed by the stop).
    let trail = site.login_trail();
    let count = |event: &str| {
        trail
            .iter()
            .filter(|r| r["event"] == event && r["user"] == site.user(0))
            .count()
    };
    assert_eq!((count("start"), count("end")), (2, 1), "{trail:#?}");
    assert_eq!(
        (count("session_start"), count("session_end")),
        (3, 3),
        "{trail:#?}"
    );
    let killed = trail
        .iter()
        .find(|r| {
            r["event"] == "session_end" && r["command"].as_str().unwrap_or("").starts_with("echo a")
        })
        .unwrap();
    assert_eq!(killed["exit"], 137, "{killed}");
    let started = trail.iter().find(|r| r["event"] == "start").unwrap();
    assert!(
        started["mounts"].to_string().contains("/workspace/data"),
        "{started}"
    );
    assert!(
        started["devices"].to_string().contains("nvidia0"),
        "{started}"
    );
}

#[test]
fn a_terminal_session_has_job_control_resizes_and_its_exit_code() {
    require_root!();
    let site = Site::new("");
    let server = site.start();
    let mut terminal = Terminal::spawn(server.ssh_on_terminal(site.user(0)), 24, 80);
    terminal.type_text("echo ready-$((6*7))\n");
    terminal.read_until("ready-42");
    terminal.type_text("tty; stty size\n");
    let seen = terminal.read_until("24 80");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    terminal.resize(40, 120);
    terminal.type_text("stty size\n");
    terminal.read_until("40 120");
    // Ctrl-C stops the foreground command, not the shell.
    terminal.type_text("sleep 60\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    terminal.type_text("\x03");
    terminal.type_text("echo after-$((1+1))\n");
    terminal.read_until("after-2");
    // A background job.
    terminal.type_text("sleep 60 &\njobs\n");
    terminal.read_until("Running");
    terminal.type_text("kill %1; exit 4\n");
    assert_eq!(terminal.wait().code(), Some(4), "{}", server.logs());

    // A dropped connection hangs the session up: its shell ends, and
    // nothing of it is left running.
    let mut terminal = Terminal::spawn(server.ssh_on_terminal(site.user(0)), 24, 80);
    // (What is typed before ssh sets the terminal raw is echoed here:
    // only the shell's answer, 2, shows the session runs.)
    terminal.type_text("echo $$ > /tmp/shell-pid; echo hang-me-up-$((1+1))\n");
    terminal.read_until("hang-me-up-2");
    terminal.kill();
    wait_until("the session's end is recorded", || {
        site.login_trail()
            .iter()
            .filter(|r| r["event"] == "session_end")
            .count()
            == 2
    });
    let ended = site.login_trail().into_iter().last().unwrap();
    assert_eq!(ended["exit"], 128 + 1, "killed by SIGHUP: {ended}");
    let (_, text) = ssh(
        &site,
        &server,
        0,
        "kill -0 $(cat /tmp/shell-pid) 2>&1 || echo gone",
    );
    assert!(text.ends_with("gone\n"), "{text}");
}

#[test]
fn scp_and_sftp_work_without_an_sftp_server_in_the_image() {
    require_root!();
    let site = Site::new("");
    let server = site.start();
    let local = site.s.path().join("local");
    std::fs::create_dir(&local).unwrap();
    std::fs::write(local.join("up.txt"), "up by scp\n").unwrap();
    let remote = |path: &str| format!("{}@127.0.0.1:{path}", site.user(0));
    let out = server
        .scp(&[
            local.join("up.txt").to_str().unwrap(),
            &remote("/workspace/up.txt"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.logs());
    // It is in the user's home on the host, theirs.
    let landed = site.home(0).join("up.txt");
    assert_eq!(std::fs::read_to_string(&landed).unwrap(), "up by scp\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&landed).unwrap().uid(), site.users[0].1);
    let out = server
        .scp(&[
            &remote("/workspace/up.txt"),
            local.join("down.txt").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(local.join("down.txt")).unwrap(),
        "up by scp\n"
    );

    // sftp: put, list, get; in the container's own files too.
    std::fs::write(local.join("put.txt"), "put by sftp\n").unwrap();
    let batch = local.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {0}/put.txt /workspace/data/put.txt\nls /workspace/data\nget /workspace/data/put.txt {0}/got.txt\nput {0}/put.txt /tmp/in-container.txt\n",
            local.display()
        ),
    )
    .unwrap();
    let out = server.sftp(site.user(0), &batch).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}\n{:#?}",
        stdout(&out),
        stderr(&out),
        server.logs(),
        site.login_trail()
    );
    assert_eq!(
        std::fs::read_to_string(local.join("got.txt")).unwrap(),
        "put by sftp\n"
    );
    assert!(site.data_dir(0).join("put.txt").exists());
    assert_eq!(
        ssh(&site, &server, 0, "cat /tmp/in-container.txt").1,
        "put by sftp\n"
    );
}

#[test]
fn a_user_or_directory_not_as_configured_is_refused() {
    require_root!();
    let site = Site::new("");
    // A data directory others can read.
    set_mode(&site.data_dir(1), 0o755);
    let server = site.start();
    let (code, text) = ssh(&site, &server, 1, "echo in");
    assert_eq!(code, 125, "{text}");
    assert!(
        text.contains("must have mode 0700 (it has 0755)")
            && text.contains(&site.data_dir(1).display().to_string()),
        "{text}"
    );
    assert!(!text.contains("in\n"), "{text}");
    drop(server);
    // A user sshd lets in whom [login] does not list.
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    let unlisted = config.replace(&format!(", \"{}\"]", site.user(1)), "]");
    assert_ne!(config, unlisted);
    std::fs::write(site.s.config(), unlisted).unwrap();
    let server = site.start();
    let (code, text) = ssh(&site, &server, 1, "echo in");
    assert_eq!(code, 125, "{text}");
    assert!(text.contains("has no container on this host"), "{text}");
    // Both refusals are in the trail, with their reasons; nothing started.
    let trail = site.login_trail();
    let reasons: Vec<&str> = trail
        .iter()
        .filter(|r| r["event"] == "start_failed" && r["user"] == site.user(1))
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{trail:#?}");
    assert!(reasons[0].contains("must have mode 0700"), "{reasons:?}");
    assert!(reasons[1].contains("has no container"), "{reasons:?}");
    assert!(!trail.iter().any(|r| r["event"] == "start"), "{trail:#?}");
}

#[test]
fn an_idle_container_stops_after_idle_stop() {
    require_root!();
    let site = Site::new("");
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    std::fs::write(
        site.s.config(),
        config.replace("idle_stop = \"1h\"", "idle_stop = \"2s\""),
    )
    .unwrap();
    let server = site.start();
    assert_eq!(ssh(&site, &server, 0, "true").0, 0, "{}", server.logs());
    let running = || stdout(&site.s.berth(&["ps", "--user", site.user(0)])).contains("running");
    assert!(running(), "running right after the session");
    wait_until("the idle container stops", || !running());
    let trail = site.login_trail();
    let end = trail
        .iter()
        .find(|r| r["event"] == "end")
        .expect("an end record");
    assert!(end["duration_ms"].as_u64().unwrap() >= 2000, "{end}");
}

/// With `[login] slurm = true`, Slurm's client in the login container
/// (Debian's, in the image) reaches the cluster: the munge socket and
/// Slurm's configuration are bound in, SLURM_CONF set where it is not the
/// default. Without it, neither is there.
#[test]
fn slurm_works_from_a_login_container_when_enabled() {
    require_root!();
    let s = Sandbox::new();
    let image = s.path().join("debian");
    write_debian_image(&image);
    let site = Site::with_image(s, &image, "slurm = true");
    let cluster = berth_e2e::slurm::Cluster::start(&site.s.config());
    let conf = cluster.conf();
    let server = LoginServer::start_with_env(
        &site.s,
        &[site.user(0), site.user(1)],
        &[("SLURM_CONF", &conf)],
    );
    let (code, text) = ssh(
        &site,
        &server,
        0,
        "srun -n1 --chdir=/tmp echo from-srun; squeue -h -u $USER -o %u; echo squeue=$?",
    );
    assert_eq!(code, 0, "{text}\n{}\n{}", server.logs(), cluster.logs());
    assert!(text.contains("from-srun\n"), "{text}");
    assert!(text.contains("squeue=0"), "{text}");
    drop(server);
    drop(cluster);
    // Not enabled: no munge socket, no Slurm configuration.
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    std::fs::write(site.s.config(), config.replace("slurm = true", "")).unwrap();
    let server = LoginServer::start_with_env(&site.s, &[site.user(0)], &[("SLURM_CONF", &conf)]);
    let out = server.stop_container(site.user(0));
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, text) = ssh(
        &site,
        &server,
        0,
        &format!("ls /run/munge {} 2>&1; echo done", conf.display()),
    );
    assert!(
        text.contains("No such file") && text.ends_with("done\n"),
        "{text}"
    );
}

/// `@GROUP` in `[login] users` lets a group's members in; `[login.user.NAME]`
/// and `[login.group.NAME]` change one user's or a group's container (here:
/// where sessions start, and a read-only dataset only they get).
#[test]
fn a_group_lists_users_and_overrides_change_their_container() {
    require_root!();
    let site = Site::new("");
    let datasets = site.s.path().join("datasets");
    std::fs::create_dir(&datasets).unwrap();
    std::fs::write(datasets.join("imagenet.txt"), "a dataset\n").unwrap();
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    let listed_by_group = config.replace(
        &format!("\"{}\"]", site.user(1)),
        &format!("\"@{}\"]", site.user(1)),
    );
    assert_ne!(config, listed_by_group);
    std::fs::write(
        site.s.config(),
        format!(
            "{listed_by_group}\n[login.group.{group}]\nworkdir = \"/workspace/data\"\n\
             [[login.user.{user}.mounts]]\nsource = \"{datasets}\"\ndestination = \"/datasets\"\nread_only = true\n",
            group = site.user(1),
            user = site.user(1),
            datasets = datasets.display()
        ),
    )
    .unwrap();
    let server = site.start();
    let (code, text) = ssh(
        &site,
        &server,
        1,
        "pwd; cat /datasets/imagenet.txt; touch /datasets/x 2>&1 || echo read-only",
    );
    assert_eq!(code, 0, "{text}\n{}", server.logs());
    assert_eq!(text.lines().next(), Some("/workspace/data"), "{text}");
    assert!(
        text.contains("a dataset\n") && text.ends_with("read-only\n"),
        "{text}"
    );
    let (_, text) = ssh(&site, &server, 0, "pwd; ls /datasets 2>&1");
    assert!(
        text.starts_with("/workspace\n") && text.contains("No such file"),
        "{text}"
    );
}

/// Root takes a session's terminal from its session only when it is the
/// user's own and the controlling terminal of the process asking: a
/// terminal the user merely holds open (here one they were handed, not
/// their login's) is refused.
#[test]
fn a_terminal_that_is_not_the_logins_own_is_refused() {
    require_root!();
    let site = Site::new("");
    let _server = site.start();
    let pty = nix::pty::openpty(None, None).unwrap();
    let (uid, gid) = test_user();
    let slave_path = nix::unistd::ttyname(&pty.slave).unwrap();
    std::os::unix::fs::chown(&slave_path, Some(uid), Some(gid)).unwrap();
    let out = site
        .s
        .berth_user_command(&["login", "-c", "echo inside"])
        .stdin(std::process::Stdio::from(pty.slave))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not the controlling terminal of your login"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("inside"));
}

/// Connections that say nothing cannot pile up root's processes: at most
/// 64 at once per user (the next is refused, saying so), and each is
/// dropped after 10 s of silence; a user with no container gets no process
/// at all (answered at once).
#[test]
fn silent_connections_are_bounded_and_dropped() {
    require_root!();
    let site = Site::new("");
    let _server = site.start();
    let script = r#"
import socket, sys, time
def open_one():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    return s
silent = [open_one() for _ in range(64)]
time.sleep(0.5)
print("65th:", open_one().recv(4096).decode())
print("first:", silent[0].recv(4096).decode())
"#;
    let socket = login_socket(&site.s);
    let (uid, gid) = test_user();
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&socket)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("65th: {\"refused\":\"too many sessions at once (64 of yours"),
        "{text}"
    );
    assert!(
        text.contains("first: {\"refused\":") && text.contains("nothing said within 10 s"),
        "{text}"
    );
    // Someone [login] does not list is answered by the service itself.
    let out = std::process::Command::new("python3")
        .args(["-c", "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); print(s.recv(4096).decode())"])
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("has no container on this host"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// berth as a user's login shell (no ForceCommand): sshd runs `berth -c
/// COMMAND`, and `-berth` for a login, which are `berth login`.
#[test]
fn berth_works_as_a_users_login_shell() {
    require_root!();
    let site = Site::new("");
    let (name, uid) = login_shell_user();
    let home = site.s.path().join("homes").join(&name);
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
    let data = site.s.path().join("data").join(format!("{name}_data"));
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(uid)).unwrap();
    set_mode(&data, 0o700);
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    let with_third = config.replace(
        &format!("\"{}\"]", site.user(1)),
        &format!("\"{}\", \"{name}\"]", site.user(1)),
    );
    assert_ne!(config, with_third);
    std::fs::write(site.s.config(), with_third).unwrap();
    let server = LoginServer::start_with_plain(&site.s, &[site.user(0)], &[&name]);
    let out = server.ssh(&name, &["id -u; pwd; exit 6"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}\n{}",
        stderr(&out),
        server.logs()
    );
    assert_eq!(stdout(&out), format!("{uid}\n/workspace\n"));
    let mut terminal = Terminal::spawn(server.ssh_on_terminal(&name), 24, 80);
    terminal.type_text("echo shell-$((2*3)); exit\n");
    terminal.read_until("shell-6");
    assert_eq!(terminal.wait().code(), Some(0));
}

/// `[login] remap_root = true`: a session is root of a user namespace of
/// its own mapped to the user, can change the image's files (they stay),
/// and has no more than that root's configured capabilities.
#[test]
fn a_remapped_session_is_root_of_its_own_user_namespace() {
    require_root!();
    let site = Site::new("remap_root = true");
    let server = site.start();
    let uid = site.users[0].1;
    let (code, text) = ssh(
        &site,
        &server,
        0,
        "id -u; cat /proc/self/uid_map; echo installed > /bin/mine && cat /bin/mine; grep NoNewPrivs /proc/self/status; cat /proc/self/setgroups",
    );
    assert_eq!(code, 0, "{text}\n{}", server.logs());
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "0",
            &format!("0 {uid} 1"),
            "installed",
            "NoNewPrivs: 1",
            "deny"
        ],
        "{text}"
    );
    // What it installed stays across a restart.
    assert!(server.stop_container(site.user(0)).status.success());
    assert_eq!(ssh(&site, &server, 0, "cat /bin/mine").1, "installed\n");
}

/// The user's own files cannot hang root's part of a session's start: with
/// /etc/passwd a FIFO, the next login still starts (and is not named).
#[test]
fn a_fifo_for_passwd_does_not_hang_a_login() {
    require_root!();
    let site = Site::new("");
    let server = site.start();
    let (code, text) = ssh(
        &site,
        &server,
        0,
        "rm /etc/passwd && busybox mkfifo /etc/passwd && echo made",
    );
    assert_eq!((code, text.as_str()), (0, "made\n"), "{}", server.logs());
    let (code, text) = ssh(&site, &server, 0, "echo still-in");
    assert_eq!(
        (code, text.as_str()),
        (0, "still-in\n"),
        "{}",
        server.logs()
    );
    assert!(server.stop_container(site.user(0)).status.success());
}

/// Whoever connects cannot stall the service for others: a socket passed
/// in a refused connection whose close blocks (it lingers on unsent data)
/// is closed by a process of its own, and a listed user's login goes on.
#[test]
fn a_lingering_socket_passed_in_cannot_stall_the_service() {
    require_root!();
    let site = Site::new("");
    let server = site.start();
    let script = r#"
import socket, struct, sys, threading, time
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(1)
sender = socket.socket(); sender.connect(listener.getsockname())
never_read, _ = listener.accept()
sender.setblocking(False)
try:
    while True:
        sender.send(b"x" * 65536)
except BlockingIOError:
    pass
sender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 3600))
login = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
login.connect(sys.argv[1])
try:
    socket.send_fds(login, [b'{"start":{"command":null,"env":[]}}'], [sender.fileno()])
except OSError:
    pass  # refused and closed first: the descriptor never went in
print("passed", flush=True)
# Its own copy closed too (in a thread: whichever close is the last one
# waits for the lingering data).
threading.Thread(target=sender.close, daemon=True).start()
time.sleep(60)
"#;
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut attacker = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(login_socket(&site.s))
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(attacker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "passed\n");
    let (code, text) = ssh(&site, &server, 0, "echo after");
    let _ = attacker.kill();
    let _ = attacker.wait();
    assert_eq!((code, text.as_str()), (0, "after\n"), "{}", server.logs());
}
