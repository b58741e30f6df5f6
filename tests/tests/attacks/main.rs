//! The threat model, as tests: an ordinary user attacking root-run berth
//! (`berth run --user`, the Slurm plugin) and rootless berth. Each test is
//! one class of attack from issue 9 and fails on a build that falls for it.
//! See docs/security.md for what is trusted and what is guaranteed.
//!
//! These tests need root (they create the user's files and run berth both
//! ways): run as anyone else they fail rather than pass unseen.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use berth_e2e::slurm::cluster_with_standard_image;
use berth_e2e::*;
use berth_e2e::{base_layer, layout_layer_digests, write_layout, Compression, Layer, RunConfig};

fn needs_root() {
    assert!(
        is_root(),
        "the attack tests run berth as root against an ordinary user: run them as root"
    );
}

/// `--user UID:GID` of the test user.
fn user_flag() -> String {
    let (uid, gid) = test_user();
    format!("{uid}:{gid}")
}

/// `berth run --user` (root acting for the test user) with `args`.
fn run_for_user(s: &Sandbox, args: &[&str]) -> Output {
    let user = user_flag();
    let mut all = vec!["run", "--user", user.as_str()];
    all.extend_from_slice(args);
    s.berth(&all)
}

/// A directory the test user owns, inside the sandbox.
fn user_dir(s: &Sandbox, name: &str) -> PathBuf {
    let dir = s.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    dir
}

/// A directory only root may enter, inside the sandbox.
fn root_only_dir(s: &Sandbox, name: &str) -> PathBuf {
    let dir = s.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Gives a whole tree to the test user.
fn chown_tree(path: &Path) {
    let (uid, gid) = test_user();
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A root filesystem directory with busybox and a `/marker` file.
fn rootfs_dir(dir: &Path, marker: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    std::fs::write(dir.join("marker"), marker).unwrap();
}

/// Writes a squashfs image at `file` of a root filesystem with busybox and
/// a `/marker` holding `marker`.
fn squashfs_image(s: &Sandbox, file: &Path, marker: &str) {
    let root = s.path().join(format!("{marker}-root"));
    rootfs_dir(&root, marker);
    let status = Command::new("mksquashfs")
        .arg(&root)
        .arg(file)
        .args(["-noappend", "-quiet", "-no-progress", "-no-xattrs"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A user's OCI layout whose top layer (an `/etc/motd` saying "from a
/// root-only tar") is a symlink to a copy only root may read, in `closed`.
fn layout_with_root_only_top_layer(s: &Sandbox, closed: &Path) -> PathBuf {
    let top = Layer::new().file("etc/motd", b"from a root-only tar\n", 0o644);
    let layout = s.path().join("layout");
    write_layout(
        &layout,
        vec![
            (base_layer().finish(), Compression::Gzip),
            (top.finish(), Compression::None),
        ],
        &RunConfig::default(),
    );
    let top_hex = layout_layer_digests(&layout)[1].replace("sha256:", "");
    let blob = layout.join("blobs/sha256").join(&top_hex);
    std::fs::rename(&blob, closed.join("layer.tar")).unwrap();
    std::os::unix::fs::symlink(closed.join("layer.tar"), &blob).unwrap();
    chown_tree(&layout);
    layout
}

fn sha256_of(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn sha256_file(path: &Path) -> String {
    sha256_of(&std::fs::read(path).unwrap())
}

/// A thread that swaps two paths (rename exchange) until stopped, as an
/// attacker racing root does. Every `pause_every` swaps it holds still for
/// 20 ms, so that some starts see one state from beginning to end.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Swapper {
    fn start(a: &Path, b: &Path, pause_every: Option<u64>) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            let (a, b) = (a.to_path_buf(), b.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    exchange(&a, &b);
                    let n = swaps.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(every) = pause_every {
                        let pause = if n.is_multiple_of(every) { 20_000 } else { 20 };
                        std::thread::sleep(std::time::Duration::from_micros(pause));
                    }
                }
            })
        };
        Swapper {
            stop,
            swaps,
            thread,
        }
    }

    fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// Stops and returns how many swaps were made; `a` is what it was at
    /// the start again when `a_was_dir` (a directory, not a symlink).
    fn stop(self, a: &Path, b: &Path, a_was_dir: bool) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let is_symlink = a.symlink_metadata().unwrap().file_type().is_symlink();
        if a_was_dir && is_symlink {
            exchange(a, b);
        }
        self.swaps.load(Ordering::Relaxed)
    }
}

/// `renameat2(RENAME_EXCHANGE)` of two paths.
fn exchange(a: &Path, b: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(ret, 0, "renameat2: {}", std::io::Error::last_os_error());
}

mod hostile;
mod kept;
mod paths;
mod processes;
mod save;
mod store;
mod terminal;
