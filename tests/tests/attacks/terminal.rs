//! The container cannot reach its caller's terminal (finding 5).

use super::*;

/// The container kept berth's session and terminal: TIOCSTI typed a line
/// into the caller's shell (root's, when root ran it for a user). Now the
/// container has a pseudo-terminal of its own (berth relays to it), and the
/// filter refuses TIOCSTI and TIOCLINUX as well. With the filter off, what
/// the container pushes lands in its own terminal, never the caller's: the
/// caller's shell reads nothing after berth exits.
#[test]
fn the_container_cannot_type_into_its_callers_terminal() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let user = user_flag();
    let berth = berth_path();
    // `script` gives the shell, and so berth, a real terminal.
    let in_terminal = |script: String, config: &Path, as_user: bool| -> String {
        let command = script
            .replace(
                "BERTH",
                &format!("{} --config {}", berth.display(), config.display()),
            )
            .replace("IMAGE", image.to_str().unwrap());
        // script's stdin stays open (it would type an EOF character into
        // the terminal when it ends): the write end is held until it exits.
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let mut c = Command::new("script");
        c.args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::from(stdin_r))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if as_user {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = test_user();
            c.uid(uid)
                .gid(gid)
                .env("HOME", s.user_home())
                .current_dir(s.user_home());
        }
        let out = c.output().unwrap();
        drop(stdin_w);
        stdout(&out).replace('\r', "")
    };
    let unfiltered = s.path().join("no-seccomp.toml");
    std::fs::write(
        &unfiltered,
        format!(
            "[store]\npath = \"{}\"\n[security]\nseccomp = false\n",
            s.store().display()
        ),
    )
    .unwrap();
    let for_user = format!("BERTH run --user {user} IMAGE berth-probe tiocsti");
    let rootless = "BERTH run IMAGE berth-probe tiocsti".to_string();
    for (who, run, as_user) in [
        ("root for a user", &for_user, false),
        ("rootless", &rootless, true),
    ] {
        let text = in_terminal(run.clone(), &s.config(), as_user);
        assert_eq!(
            text.lines().next().map(str::trim),
            Some("EPERM"),
            "{who}: TIOCSTI must be refused: {text:?}"
        );
        let caller = format!("bash -c '{run}; read -t 2 -n 1 c; echo \"GOT:[$c]\"'");
        let text = in_terminal(caller, &unfiltered, as_user);
        assert!(
            text.contains("GOT:[]"),
            "{who}: the container typed into the caller's terminal: {text:?}"
        );
    }
}
