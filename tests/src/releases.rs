//! The Slurm releases the plugin is tested against: Debian 12's 22.05 on
//! the host, Debian 13's 24.11 and Debian sid's 26.05 in roots made with
//! debootstrap from Debian's archive (`scripts/slurm-roots.sh`, cached in
//! [`ROOTS_DIR`]). A root's daemons and clients run in a mount namespace of
//! its own whose root mount is the root (pivot_root, not chroot: a task
//! that joins a container's mount namespace gets that namespace's root),
//! with the host's /proc, /sys, /dev, /tmp and build tree bound in at the
//! same paths; they share the host's pid and network namespaces. The plugin for each release is built against that
//! root's headers by `scripts/test.sh` into `target/slurm-releases/NAME/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{target_root, test_user};

/// Where `scripts/slurm-roots.sh` keeps the roots.
pub const ROOTS_DIR: &str = "/var/cache/berth-tests/roots";

/// A Slurm release the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The host's own Slurm (Debian 12: 22.05).
    Host,
    /// Debian 13 "trixie": 24.11.
    Trixie,
    /// Debian sid: 26.05.
    Sid,
}

impl Release {
    /// The Debian suite of the release's root (None for the host).
    pub fn suite(self) -> Option<&'static str> {
        match self {
            Release::Host => None,
            Release::Trixie => Some("trixie"),
            Release::Sid => Some("sid"),
        }
    }

    /// How the release's `srun --version` starts (sid moves on: its major).
    pub fn version_prefix(self) -> &'static str {
        match self {
            Release::Host => "22.05",
            Release::Trixie => "24.11",
            Release::Sid => "26.",
        }
    }

    /// The root the release runs in (None for the host); made by
    /// `scripts/slurm-roots.sh`, which `scripts/test.sh` runs.
    pub fn root(self) -> Option<PathBuf> {
        let root = Path::new(ROOTS_DIR).join(self.suite()?);
        assert!(
            root.join("usr/sbin/slurmd").exists(),
            "{} has no Slurm: run scripts/slurm-roots.sh (scripts/test.sh does)",
            root.display()
        );
        Some(root)
    }

    /// spank_berth.so built against this release's headers.
    pub fn plugin(self) -> PathBuf {
        let Some(suite) = self.suite() else {
            return crate::slurm::plugin_path();
        };
        let p = target_root()
            .join("slurm-releases")
            .join(suite)
            .join("libspank_berth.so");
        assert!(
            p.exists(),
            "{} missing: scripts/test.sh builds the plugin for each release",
            p.display()
        );
        p
    }
}

/// A mount namespace whose "/" is a release's root; it lasts as long as
/// its holder process (a `sleep` in the root) and whatever runs in it.
pub struct RootNamespace {
    holder: Child,
}

impl RootNamespace {
    /// Sets the namespace up: binds the root onto itself, the host's /proc,
    /// /sys, /dev (recursively), /tmp and the build tree into it, and gives
    /// the root the test user's passwd and group entries.
    pub fn enter(root: &Path) -> RootNamespace {
        add_test_user(root);
        let build = target_root();
        let script = r#"set -e
root=$1; build=$2
mount --bind "$root" "$root"
for d in proc sys dev; do mount --rbind "/$d" "$root/$d"; done
mount --bind /tmp "$root/tmp"
mkdir -p "$root$build" "$root/.host"
mount --bind "$build" "$root$build"
cd "$root"
pivot_root . .host
umount -l /.host
echo ready
exec sleep infinity
"#;
        let mut holder = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(root)
            .arg(&build)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        );
        assert_eq!(line.trim(), "ready", "cannot set up {}", root.display());
        RootNamespace { holder }
    }

    /// `program` run in the namespace, from /tmp, as root.
    pub fn command(&self, program: &str) -> Command {
        self.command_as(program, None)
    }

    /// `program` run in the namespace, from /tmp, as `user` (uid, gid; no
    /// supplementary groups) or root.
    pub fn command_as(&self, program: &str, user: Option<(u32, u32)>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--root", "--wd"]);
        if let Some((uid, gid)) = user {
            c.arg(format!("--setuid={uid}"))
                .arg(format!("--setgid={gid}"));
        }
        c.args(["--", "env", "-C", "/tmp", program]);
        c
    }
}

impl Drop for RootNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Appends the test user's passwd and group lines to the root's files (once).
fn add_test_user(root: &Path) {
    static ADDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ADDING.lock().unwrap_or_else(|e| e.into_inner());
    let (uid, gid) = test_user();
    for (file, id) in [("passwd", uid), ("group", gid)] {
        let host = std::fs::read_to_string(Path::new("/etc").join(file)).unwrap();
        let line = host
            .lines()
            .find(|l| l.split(':').nth(2) == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("id {id} not in /etc/{file}"))
            .to_string();
        let path = root.join("etc").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.lines().any(|l| l == line) {
            std::fs::write(&path, format!("{text}{line}\n")).unwrap();
        }
    }
}
