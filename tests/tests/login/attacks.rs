//! What a local user must not be able to do to root's service: take a
//! terminal that is not their login's, pile up root's processes, hang a
//! session's start or stall the service for others.

use super::*;

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
    let out = python_as((uid, gid), script, &socket).output().unwrap();
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
    let answer = "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); print(s.recv(4096).decode())";
    let out = python_as(NOBODY, answer, &socket).output().unwrap();
    assert!(
        stdout(&out).contains("has no container on this host"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
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
    let mut attacker = python_as(NOBODY, script, &login_socket(&site.s))
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
