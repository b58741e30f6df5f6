//! The shared GPU server (issue 15): OpenSSH's sshd with `ForceCommand
//! berth login`, `berth login-service` as root, two users with keys. Each
//! lands in their own persistent container with /workspace and its 0700
//! /workspace/data, their own GPU only; sessions share the running
//! container; it survives a restart; a terminal session has job control,
//! Ctrl-C, resizes and its exit code; scp and sftp work without an
//! sftp-server in the image; every start and end is in the audit trail.

pub use std::path::{Path, PathBuf};

pub use berth_e2e::ssh::{login_shell_user, login_socket, LoginServer, Terminal};
pub use berth_e2e::*;

mod attacks;
mod configuration;
mod sessions;

/// A shared server in a sandbox: both test users listed, their homes and
/// data directories under `<sandbox>/homes` and `<sandbox>/data`, fake GPUs
/// nvidia0..2 with 0 for the test user, 1 for the second, 2 reserved.
pub struct Site {
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

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `command` over ssh as user `i`: exit code and output (both streams).
pub fn ssh(site: &Site, server: &LoginServer, i: usize, command: &str) -> (i32, String) {
    let out = server.ssh(site.user(i), &[command]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// Who has no container: nobody.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// `python3 -c SCRIPT SOCKET` as `ids` (uid, gid): a local user talking to
/// the login service directly, as no `berth login` would.
pub fn python_as(ids: (u32, u32), script: &str, socket: &Path) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("python3");
    c.args(["-c", script]).arg(socket).uid(ids.0).gid(ids.1);
    c
}
