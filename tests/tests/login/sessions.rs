//! What a user gets: their own container (their uid, home, data and GPU),
//! shared by their sessions and kept across restarts; a terminal that
//! behaves; scp and sftp; berth as a login shell; remapped root.

use super::*;

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
