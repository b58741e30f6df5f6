//! Test kit for berth's end-to-end tests: builds OCI image layouts (busybox,
//! the probe, hostile layers), finds the binaries, runs berth as root or as an
//! unprivileged test user, and checks for leftovers.

mod image;
pub mod registry;
pub mod releases;
pub mod slurm;
pub mod ssh;
pub mod vm;

pub use image::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The unprivileged user the tests run rootless berth as.
pub const TEST_USER: &str = "berth-test";
/// The second user of the shared-server tests.
pub const SECOND_TEST_USER: &str = "berth-login2";

/// The target directory the tests (or the kit's binaries) were built into,
/// e.g. target/debug: tests run from target/debug/deps/.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Creates character device nodes (name, major, minor), mode 0666, in `dir`
/// (made if missing): fake GPUs have NVIDIA's major 195 and no driver.
pub fn make_char_devices(dir: &Path, nodes: &[(&str, u64, u64)]) {
    for (name, major, minor) in nodes {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(*major, *minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
        // mknod honours the umask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

/// The workspace's target directory (the parent of target/debug).
pub fn target_root() -> PathBuf {
    let dir = target_dir();
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// The probe binary built beside the tests.
pub fn probe_path() -> PathBuf {
    let p = target_dir().join("berth-probe");
    assert!(
        p.exists(),
        "{} missing: cargo builds it with the tests",
        p.display()
    );
    p
}

/// The berth binary (built into the same target directory).
pub fn berth_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("berth");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p berth-launcher` first (the test script does)",
        p.display()
    );
    p
}

/// A scratch area for one test: a store, a config and images, readable by the test user.
pub struct Sandbox {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A new sandbox with a config pointing the root store inside it.
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Sandbox { dir };
        s.write_config("");
        s
    }

    /// The sandbox path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The root store of this sandbox.
    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// The test user's home (rootless store under it).
    pub fn user_home(&self) -> PathBuf {
        let home = self.path().join("home");
        if !home.exists() {
            std::fs::create_dir(&home).unwrap();
            let (uid, gid) = test_user();
            std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        }
        home
    }

    /// Writes berth.toml: `[store] path` plus `extra` TOML.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "[store]\npath = \"{}\"\nsummary_dir = \"{}\"\n{extra}\n",
            self.store().display(),
            self.path().join("ps").display()
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.path().join("berth.toml")
    }

    /// Writes the standard test image (three layers, three compressions, a
    /// whiteout and an opaque dir) and returns its path.
    pub fn standard_image(&self) -> PathBuf {
        let dir = self.path().join("image");
        write_standard_image(&dir);
        dir
    }

    /// Writes an image of the busybox base layer with `top` over it (both
    /// gzip) at `<sandbox>/<name>` and returns its path.
    pub fn image_on_base(&self, name: &str, top: Layer) -> PathBuf {
        let dir = self.path().join(name);
        write_layout(
            &dir,
            vec![
                (base_layer().finish(), Compression::Gzip),
                (top.finish(), Compression::Gzip),
            ],
            &RunConfig::default(),
        );
        dir
    }

    /// Runs berth as root with this sandbox's config.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_command(args).output().unwrap()
    }

    /// A berth command as root with this sandbox's config.
    pub fn berth_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_path());
        c.arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("BERTH_CONFIG");
        c
    }

    /// Runs berth as the unprivileged test user (rootless), store under its home.
    pub fn berth_as_user(&self, args: &[&str]) -> Output {
        self.berth_user_command(args).output().unwrap()
    }

    /// A berth command as the unprivileged test user.
    pub fn berth_user_command(&self, args: &[&str]) -> Command {
        let (uid, gid) = test_user();
        let home = self.user_home();
        let mut c = self.berth_command(args);
        c.uid(uid)
            .gid(gid)
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .current_dir(&home);
        c
    }
}

/// The uid and gid of the test user, creating the user when missing.
pub fn test_user() -> (u32, u32) {
    let lookup = || {
        let out = Command::new("id").args(["-u", TEST_USER]).output().ok()?;
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        let out = Command::new("id").args(["-g", TEST_USER]).output().ok()?;
        let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some((uid, gid))
    };
    // Tests run on threads: one creates the user while the others wait
    // (two useradd at once fail on /etc/passwd's lock).
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ids) = lookup() {
        return ids;
    }
    let _ = Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", TEST_USER])
        .status();
    lookup().expect("cannot create the test user (useradd)")
}

/// The second user of the shared-server tests: its name and uid (made
/// when missing).
pub fn second_test_user() -> (String, u32) {
    let name = SECOND_TEST_USER;
    let lookup = || {
        let out = Command::new("id").args(["-u", name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(uid) = lookup() {
        return (name.to_string(), uid);
    }
    let _ = Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", name])
        .status();
    let uid = lookup().expect("cannot create the second test user (useradd)");
    (name.to_string(), uid)
}

/// The test user's home directory (from the name service).
pub fn test_user_home() -> PathBuf {
    let (uid, _) = test_user();
    let out = Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    PathBuf::from(line.trim().split(':').nth(5).unwrap_or_default())
}

/// Whether this process is root (the tests need it to run berth both ways).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails a test that needs root when it is not run as root: a test that
/// did not run never reports as passed.
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::is_root(),
            "this test needs root (it runs berth as root and as an unprivileged user): run scripts/test.sh as root"
        );
    };
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "berth failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Lines of the host's mount table mentioning `needle`.
pub fn host_mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free TCP ports on loopback (all held while they are picked,
/// so no two are the same).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A directory in the sandbox everyone may write (for job output files).
pub fn shared_dir(s: &Sandbox, name: &str) -> PathBuf {
    let dir = s.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Waits up to 20 s for `done`, failing the test with `what` after that.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Entries in a directory (0 when it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
