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

fn sha256_of(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn sha256_file(path: &Path) -> String {
    sha256_of(&std::fs::read(path).unwrap())
}

// 1 and 9 -----------------------------------------------------------------

/// `--container-save` over `--container-image=/etc` once packed
/// /etc/shadow and munge's key (mksquashfs ran as root over the container),
/// a mount with a space in its path escaped the exclusion list, and the
/// temporary file was 0644 in the store. Now mksquashfs runs as the user
/// over the container's root mount alone.
#[test]
fn container_save_packs_only_what_the_user_may_read_and_no_mount() {
    needs_root();
    let (s, cluster, _image) = cluster_with_standard_image();
    let out_dir = user_dir(&s, "saved");
    let spaced = user_dir(&s, "with space");
    std::fs::write(spaced.join("mounted-file"), "from a bind mount\n").unwrap();
    chown_tree(&spaced);
    let saved = out_dir.join("etc.sqsh");
    let mounts = format!(
        "--container-mounts=/bin/busybox:/busybox:ro,{}:/with space",
        spaced.display()
    );
    let save = format!("--container-save={}", saved.display());
    let out = cluster.srun(&[
        "--chdir=/",
        "--container-image=/etc",
        &mounts,
        &save,
        "/busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    wait_until("the squashfs is written", || saved.exists());
    let meta = std::fs::metadata(&saved).unwrap();
    assert_eq!(meta.uid(), test_user().0, "the saved file is the user's");
    let listing = stdout(
        &Command::new("unsquashfs")
            .args(["-l", "-d", ""])
            .arg(&saved)
            .output()
            .unwrap(),
    );
    assert!(
        listing.contains("/passwd"),
        "the save holds /etc: {listing}"
    );
    assert!(
        !listing.contains("mounted-file"),
        "a bind mount was saved: {listing}"
    );
    let extracted = s.path().join("extracted");
    let status = Command::new("unsquashfs")
        .args(["-no-xattrs", "-d"])
        .arg(&extracted)
        .arg(&saved)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let shadow = std::fs::read(extracted.join("shadow")).unwrap_or_default();
    let real = std::fs::read("/etc/shadow").unwrap();
    assert!(
        shadow.is_empty() && !real.is_empty(),
        "root-only /etc/shadow was packed ({} bytes)",
        shadow.len()
    );
    let key = std::fs::read(extracted.join("munge/munge.key")).unwrap_or_default();
    assert!(key.is_empty(), "munge's key was packed");
    let leftovers: Vec<_> = std::fs::read_dir(s.store().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "left in the store: {leftovers:?}");
    assert!(
        !std::fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("berth-save")),
        "a temporary file was left beside the save"
    );
}

// 2 -------------------------------------------------------------------------

/// squashfs images were hashed by path and extracted by path again: a user
/// who changed the file in between put a trojan in the store under a site
/// image's digest. Now the layer is extracted from a private copy and keyed
/// by that copy's digest. The user's file is swapped (rename exchange)
/// with a trojan thousands of times while root imports it again and again.
#[test]
fn a_squashfs_changed_during_import_never_poisons_the_store() {
    needs_root();
    let s = Sandbox::new();
    let dir = user_dir(&s, "squash");
    let make = |name: &str| {
        let root = s.path().join(format!("{name}-root"));
        rootfs_dir(&root, name);
        let file = s.path().join(format!("{name}.sqsh"));
        let status = Command::new("mksquashfs")
            .arg(&root)
            .arg(&file)
            .args(["-noappend", "-quiet", "-no-progress", "-no-xattrs"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(&file).unwrap()
    };
    let good = make("good");
    let trojan = make("trojan");
    let (good_hex, trojan_hex) = (sha256_of(&good), sha256_of(&trojan));
    let image = dir.join("site.sqsh");
    let other = dir.join("other.sqsh");
    std::fs::write(&image, &good).unwrap();
    std::fs::write(&other, &trojan).unwrap();
    chown_tree(&dir);

    let swapper = Swapper::start(&image, &other, None);
    let layers = s.store().join("layers/sha256");
    let mut runs = 0;
    while runs < 200 && (runs < 40 || swapper.swaps() < 5000) {
        runs += 1;
        let _ = run_for_user(
            &s,
            &[image.to_str().unwrap(), "/bin/busybox", "cat", "/marker"],
        );
        for (hex, marker) in [(&good_hex, "good"), (&trojan_hex, "trojan")] {
            let layer = layers.join(hex);
            if layer.exists() {
                assert_eq!(
                    std::fs::read_to_string(layer.join("marker")).unwrap(),
                    marker,
                    "the store holds other content under the {marker} image's digest"
                );
                std::fs::remove_dir_all(&layer).unwrap();
            }
        }
    }
    let swapped = swapper.stop(&image, &other, false);
    assert!(swapped >= 5000, "only {swapped} swaps in {runs} imports");
}

// 3 -------------------------------------------------------------------------

/// A user's OCI layout whose blobs are symlinks: to a root-only file (the
/// error printed its sha256) or to a root-only copy of a real layer (it
/// was extracted into the store and shown in the container).
#[test]
fn symlinked_layout_blobs_are_refused() {
    needs_root();
    let s = Sandbox::new();
    let closed = root_only_dir(&s, "closed");
    let secret = closed.join("secret.json");
    std::fs::write(&secret, br#"{"secret": "root's"}"#).unwrap();
    let secret_hex = sha256_file(&secret);

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
    let blobs = layout.join("blobs/sha256");
    let digests = layout_layer_digests(&layout);
    let top_hex = digests[1].strip_prefix("sha256:").unwrap().to_string();
    // The top layer's blob now lives only where root can read it.
    std::fs::rename(blobs.join(&top_hex), closed.join("layer.tar")).unwrap();
    std::os::unix::fs::symlink(closed.join("layer.tar"), blobs.join(&top_hex)).unwrap();
    chown_tree(&layout);
    let out = run_for_user(&s, &[layout.to_str().unwrap(), "cat", "/etc/motd"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("symlink"),
        "the refusal names the symlink: {}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("root-only tar"));
    let store_layers = s.store().join("layers/sha256");
    assert!(
        count_entries(&store_layers) <= 1,
        "the symlinked layer reached the store"
    );

    // A config blob symlinked to a root-only file: nothing of it is told.
    let layout2 = s.path().join("layout2");
    write_layout(
        &layout2,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig::default(),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout2.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout2.join("blobs/sha256").join(&manifest_hex)).unwrap(),
    )
    .unwrap();
    let config_hex = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let config_blob = layout2.join("blobs/sha256").join(&config_hex);
    std::fs::remove_file(&config_blob).unwrap();
    std::os::unix::fs::symlink(&secret, &config_blob).unwrap();
    chown_tree(&layout2);
    let out = run_for_user(&s, &[layout2.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains(&secret_hex),
        "the error tells the root-only file's digest: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
}

// 4 -------------------------------------------------------------------------

/// A root filesystem directory image was checked as the user, then mounted
/// by path as root: swapping it for a symlink to a root-only directory in
/// between gave the user that directory. Now the directory is opened once
/// with the user's rights and mounted from that descriptor. Mount sources
/// (`-m`) get the same treatment and the same attack.
#[test]
fn a_directory_swapped_for_a_symlink_never_shows_root_only_files() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let closed = root_only_dir(&s, "closed");
    rootfs_dir(&closed.join("victim"), "ROOT-ONLY-SECRET");
    let race = user_dir(&s, "race");
    let mine = race.join("img");
    rootfs_dir(&mine, "mine");
    let link = race.join("link");
    std::os::unix::fs::symlink(closed.join("victim"), &link).unwrap();
    // A symlink to / for the mount source: the host's root with its /proc
    // and /dev, which the mount policy refuses.
    let to_root = race.join("to-root");
    std::os::unix::fs::symlink("/", &to_root).unwrap();
    chown_tree(&race);
    let mount = format!("{}:/m", mine.display());
    let as_image = [mine.to_str().unwrap(), "/bin/busybox", "cat", "/marker"];
    let as_mount = ["-m", &mount, image.to_str().unwrap(), "cat", "/m/marker"];
    let host_root_check = "cat /m/marker; test -d /m/proc/self && echo ROOT-ONLY-SECRET";
    let as_root_mount = [
        "-m",
        &mount,
        image.to_str().unwrap(),
        "sh",
        "-c",
        host_root_check,
    ];
    for (args, link) in [
        (&as_image[..], &link),
        (&as_mount[..], &link),
        (&as_root_mount[..], &to_root),
    ] {
        let swapper = Swapper::start(&mine, link, Some(64));
        let mut runs = 0;
        let mut own = 0;
        let enough = |runs: usize, own: usize| {
            runs >= 400 || (runs >= 40 && own > 0 && swapper.swaps() >= 5000)
        };
        while !enough(runs, own) {
            runs += 1;
            let text = stdout(&run_for_user(&s, args));
            assert!(
                !text.contains("ROOT-ONLY-SECRET"),
                "{args:?}, run {runs}: the user saw a root-only directory"
            );
            if text.contains("mine") {
                own += 1;
            }
        }
        let swapped = swapper.stop(&mine, link, true);
        assert!(swapped >= 5000, "only {swapped} swaps in {runs} runs");
        assert!(own > 0, "{args:?}: no run used the user's own directory");
    }
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

// 5 -------------------------------------------------------------------------

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

// 6 -------------------------------------------------------------------------

/// A whiteout named `.wh..` strips to `..`: the extractor removed the
/// store's tmp/ as root, with another user's extraction in it. Now such
/// whiteouts fail the layer and nothing outside it is touched.
#[test]
fn whiteouts_naming_nothing_dot_or_dotdot_are_refused() {
    needs_root();
    let s = Sandbox::new();
    ok(s.berth(&["images"])); // makes the store
    let sentinel = s.store().join("tmp/someone-elses-extraction");
    std::fs::create_dir_all(sentinel.join("inside")).unwrap();
    for hidden in ["", ".", ".."] {
        let top = Layer::new()
            .dir("a", 0o755)
            .file("a/file", b"x", 0o644)
            .whiteout("a", hidden);
        let image = s.image_on_base(&format!("wh{}", hidden.len()), top);
        chown_tree(&image);
        let out = run_for_user(&s, &[image.to_str().unwrap(), "true"]);
        assert!(!out.status.success(), "whiteout .wh.{hidden} accepted");
        assert!(
            stderr(&out).contains("whiteout"),
            ".wh.{hidden}: {}",
            stderr(&out)
        );
        assert!(
            sentinel.join("inside").is_dir(),
            ".wh.{hidden} removed something outside the layer"
        );
    }
}

// 7 -------------------------------------------------------------------------

/// Layer directories kept their tar modes on the host (a layer's /tmp
/// 1777): users planted files into lower layers, held the layers' lock
/// files and read image records. Now the store is root's alone.
#[test]
fn the_shared_store_is_roots_alone() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    ok(run_for_user(&s, &[image.to_str().unwrap(), "true"]));
    let store = s.store();
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "store mode {mode:o}");
    let layer_tmp = std::fs::read_dir(store.join("layers/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("tmp"))
        .find(|p| p.is_dir())
        .expect("the base layer's /tmp");
    let lock = std::fs::read_dir(store.join("locks"))
        .unwrap()
        .flatten()
        .next()
        .expect("a lock file")
        .path();
    let record = std::fs::read_dir(store.join("images"))
        .unwrap()
        .flatten()
        .next()
        .map(|e| e.path());
    let (uid, gid) = test_user();
    let as_user = |script: &str, path: &Path| {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(path)
            .uid(uid)
            .gid(gid)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        !as_user("touch \"$1/planted\"", &layer_tmp),
        "a user wrote a layer"
    );
    assert!(!layer_tmp.join("planted").exists());
    assert!(
        !as_user("exec 3<\"$1\"", &lock),
        "a user opened a lock file"
    );
    if let Some(record) = record {
        assert!(
            !as_user("cat \"$1\" >/dev/null", &record),
            "a user read a record"
        );
    }
}

// 8 -------------------------------------------------------------------------

/// After one user pulled a private image with their credentials, a user
/// without any ran it from the node's cache. Now a private image is
/// started for a user only when the registry lets that user pull it (or
/// did within `registry.auth_cache`); a public one needs no question.
#[test]
fn a_cached_private_image_is_only_for_users_who_may_pull_it() {
    needs_root();
    let s = Sandbox::new();
    let registry = berth_e2e::registry::Registry::start();
    let layout = s.standard_image();
    registry.push(&layout, "private/img:v1");
    registry.push(&layout, "public/img:v1");
    let gate = berth_e2e::registry::TokenGate::start(&registry, "alice", "s3cret");
    let private = format!("{}/private/img:v1", gate.host());
    let public = format!("{}/public/img:v1", registry.host());
    // Root pulls with its own credentials (from its HOME, not berth.toml).
    let root_home = s.path().join("root-home");
    std::fs::create_dir_all(root_home.join(".config/enroot")).unwrap();
    let netrc = format!("machine {} login alice password s3cret\n", gate.host());
    std::fs::write(root_home.join(".config/enroot/.credentials"), &netrc).unwrap();
    for reference in [&private, &public] {
        let out = s
            .berth_command(&["pull", reference])
            .env("HOME", &root_home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A user without credentials: the public image runs, the private not.
    let user_netrc = test_user_home().join(".config/enroot/.credentials");
    let _ = std::fs::remove_file(&user_netrc);
    assert_eq!(
        ok(run_for_user(&s, &[&public, "cat", "/etc/motd"])),
        "layer2\n"
    );
    let out = run_for_user(&s, &[&private, "cat", "/etc/motd"]);
    assert!(
        !out.status.success(),
        "ran a private image: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("private image")
            && (stderr(&out).contains("authoriz") || stderr(&out).contains("authentication")),
        "{}",
        stderr(&out)
    );
    // With their own credentials they may; the answer is remembered.
    let dir = user_netrc.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    chown_tree(&test_user_home().join(".config"));
    std::fs::write(&user_netrc, &netrc).unwrap();
    chown_tree(&user_netrc);
    assert_eq!(
        ok(run_for_user(&s, &[&private, "cat", "/etc/motd"])),
        "layer2\n"
    );
    std::fs::remove_file(&user_netrc).unwrap();
    assert_eq!(
        ok(run_for_user(&s, &[&private, "cat", "/etc/motd"])),
        "layer2\n",
        "a successful check holds for registry.auth_cache"
    );
    // With no remembering, the registry is asked each time.
    s.write_config("[registry]\nauth_cache = \"0\"\n");
    let out = run_for_user(&s, &[&private, "true"]);
    assert!(!out.status.success(), "the check was not made again");
    // A registry that cannot be asked, and nothing remembered: refused,
    // saying why; the public image still runs from the cache.
    drop(gate);
    std::fs::write(&user_netrc, &netrc).unwrap();
    chown_tree(&user_netrc);
    let out = run_for_user(&s, &[&private, "true"]);
    let _ = std::fs::remove_file(&user_netrc);
    assert!(!out.status.success(), "ran a private image unchecked");
    assert!(
        stderr(&out).contains("private image") && stderr(&out).contains("cannot reach"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ok(run_for_user(&s, &[&public, "cat", "/etc/motd"])),
        "layer2\n"
    );
}

// 10 ------------------------------------------------------------------------

/// Root made the working directory following `/proc/PID/root`: a user
/// created a directory inside another user's running container. Now no
/// magic link is followed.
#[test]
fn the_working_directory_never_leads_into_another_container() {
    needs_root();
    let (s, cluster, image) = cluster_with_standard_image();
    // Another user's container (root's own), running.
    let mut other = s
        .berth_command(&["run", &image, "berth-probe", "sleep", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let berth_pid = other.id();
    let init = std::fs::read_to_string(format!("/proc/{berth_pid}/task/{berth_pid}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the container's init")
        .to_string();
    let target = format!("/proc/{init}/root/tmp/planted-by-a-user");
    let workdir = format!("--container-workdir={target}");
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[&image_opt, &workdir, "pwd"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        !Path::new(&target).exists(),
        "a directory was made in another container"
    );
}

// 12 and the no-oracle rule ------------------------------------------------

/// Hostile input costs bounded work and is refused with a clear message: a
/// layer 4000 directories deep, a sparse 3 GB index.json, a FIFO as the
/// image (it hung root forever).
#[test]
fn hostile_images_are_refused_without_unbounded_work() {
    needs_root();
    let s = Sandbox::new();
    let deep_path = vec!["d"; 4000].join("/");
    let mut deep = Layer::new();
    let mut path = String::new();
    for part in deep_path.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        deep = deep.dir(&path, 0o755);
    }
    let image = s.image_on_base("deep", deep);
    chown_tree(&image);
    let out = run_for_user(&s, &[image.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("store.max_layer_depth"),
        "{}",
        stderr(&out)
    );

    let sparse = user_dir(&s, "sparse");
    std::fs::write(
        sparse.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = std::fs::File::create(sparse.join("index.json")).unwrap();
    index.set_len(3 << 30).unwrap();
    chown_tree(&sparse);
    let out = run_for_user(&s, &[sparse.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("index.json"), "{}", stderr(&out));
    assert!(stderr(&out).contains("MiB"), "{}", stderr(&out));

    let fifo_dir = user_dir(&s, "fifo");
    let fifo = fifo_dir.join("image.sqsh");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    chown_tree(&fifo_dir);
    let user = user_flag();
    let mut child = s
        .berth_command(&["run", "--user", &user, fifo.to_str().unwrap(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth hangs on a FIFO named as the image");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
}

/// Rootless, the command could PTRACE_ATTACH the container's init (same
/// uid), and hang berth for ever. Now init is not dumpable.
#[test]
fn the_command_cannot_ptrace_its_init() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let out = s.berth_as_user(&["run", image.to_str().unwrap(), "berth-probe", "ptrace", "1"]);
    assert_eq!(ok(out).trim(), "EPERM");
}

/// Root's errors for a path the user cannot reach are the same whether or
/// not it exists: root's answers tell nothing the user could not find out.
#[test]
fn no_oracle_for_paths_the_user_cannot_reach() {
    needs_root();
    let s = Sandbox::new();
    let closed = root_only_dir(&s, "closed");
    std::fs::write(closed.join("there.sqsh"), b"hsqs").unwrap();
    let message = |name: &str| {
        let path = closed.join(name);
        let out = run_for_user(&s, &[path.to_str().unwrap(), "true"]);
        assert!(!out.status.success());
        stderr(&out).replace(name, "NAME")
    };
    assert_eq!(message("there.sqsh"), message("absent.sqsh"));
    let out = run_for_user(&s, &["/etc/shadow", "true"]);
    let shadow = stderr(&out).replace("/etc/shadow", "PATH");
    let out = run_for_user(&s, &["/etc/no-such-file", "true"]);
    let missing = stderr(&out).replace("/etc/no-such-file", "PATH");
    assert_eq!(shadow, missing);
}

// 11 ------------------------------------------------------------------------

/// Root-run `--remap-root` dropped the user's supplementary groups, so a
/// file denied to one of them (mode 0604, that group's owner) became
/// readable as "other". Now the groups stay, and cannot be dropped inside.
#[test]
fn remap_root_keeps_the_groups_that_deny_access() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    let group = "berth-denied";
    let _ = Command::new("groupadd").args(["-f", group]).status();
    let added = Command::new("gpasswd")
        .args(["-a", TEST_USER, group])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let dir = s.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("not-for-the-group");
    std::fs::write(&file, "readable by others only\n").unwrap();
    let chgrp = Command::new("chgrp")
        .arg(group)
        .arg(&file)
        .status()
        .unwrap();
    assert!(chgrp.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let mount = format!("{}:/shared", dir.display());
    for remap in [false, true] {
        let user = user_flag();
        let mut args = vec!["run", "--user", user.as_str()];
        if remap {
            args.push("--remap-root");
        }
        args.extend_from_slice(&[
            "-m",
            &mount,
            image.to_str().unwrap(),
            "berth-probe",
            "read",
            "/shared/not-for-the-group",
        ]);
        let text = ok(s.berth(&args));
        assert_eq!(text.trim(), "EACCES", "remap-root {remap}: {text}");
    }
}

/// Slurm `--container-remap-root` tasks had a full bounding set (a new user
/// namespace starts with one). Now it is the configured set, as the
/// permitted one.
#[test]
fn slurm_remap_root_tasks_have_only_the_configured_bounding_set() {
    needs_root();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let out = cluster.srun(&[
        &image_opt,
        "--container-remap-root",
        "grep",
        "-E",
        "^Cap(Prm|Bnd):",
        "/proc/self/status",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(value("CapBnd:"), value("CapPrm:"), "{text}");
    assert_ne!(value("CapPrm:"), "0000000000000000", "{text}");
}

/// More hostile input, from an outside review of this build: a layer of
/// zeros that compresses to nothing filled the store's disk (written
/// densely), a layer larger than the store, a sparse "squashfs" copied
/// whole into the store, a GNU long name claiming gigabytes (the tar
/// parser buffered it), a directory image with a mount inside (what the
/// mount hides would show), and a chain of nested indexes.
#[test]
fn hostile_images_cost_no_disk_memory_or_stack() {
    needs_root();
    let s = Sandbox::new();
    // 64 MiB of zeros: written as a hole.
    let zeros = vec![0u8; 64 << 20];
    let image = s.image_on_base("zeros", Layer::new().file("zeros", &zeros, 0o644));
    chown_tree(&image);
    ok(run_for_user(&s, &[image.to_str().unwrap(), "true"]));
    let allocated: u64 = std::fs::read_dir(s.store().join("layers/sha256"))
        .unwrap()
        .flatten()
        .filter_map(|layer| std::fs::metadata(layer.path().join("zeros")).ok())
        .map(|m| m.blocks() * 512)
        .sum();
    assert!(
        allocated < 1 << 20,
        "64 MiB of zeros took {allocated} bytes of disk"
    );
    // The same layer is refused by a store smaller than it.
    let small = Sandbox::new();
    small.write_config("max_size = \"32M\"\n");
    let image = small.image_on_base("zeros", Layer::new().file("zeros", &zeros, 0o644));
    chown_tree(&image);
    let out = run_for_user(&small, &[image.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("store.max_size"), "{}", stderr(&out));

    let files = user_dir(&s, "files");
    // A "squashfs" of 4 KiB data and a 2 GiB hole.
    let sparse = files.join("sparse.sqsh");
    let mut head = b"hsqs".to_vec();
    head.resize(4096, 1);
    std::fs::write(&sparse, &head).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    // A docker-archive whose first entry is a GNU long name of 3 GiB.
    let long = files.join("long.tar");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(3 << 30);
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_cksum();
    let mut data = header.as_bytes().to_vec();
    data.resize(9 << 20, b'a'); // past the 8 MiB the parser may read
    std::fs::write(&long, &data).unwrap();
    chown_tree(&files);
    for (file, expected) in [(&sparse, "sparse"), (&long, "long name")] {
        let out = run_for_user(&s, &[file.to_str().unwrap(), "true"]);
        assert!(!out.status.success(), "{expected}: accepted");
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    assert_eq!(
        count_entries(&s.store().join("tmp")),
        0,
        "a copy was left in the store"
    );

    // A directory image with a mount inside it.
    let dir = user_dir(&s, "mounted");
    rootfs_dir(&dir, "mine");
    std::fs::create_dir(dir.join("hidden")).unwrap();
    std::fs::write(dir.join("hidden/under-the-mount"), "HIDDEN").unwrap();
    chown_tree(&dir);
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(dir.join("hidden"))
        .status()
        .unwrap();
    assert!(mounted.success());
    let out = run_for_user(
        &s,
        &[
            dir.to_str().unwrap(),
            "/bin/busybox",
            "cat",
            "/hidden/under-the-mount",
        ],
    );
    let _ = Command::new("umount").arg(dir.join("hidden")).status();
    assert!(
        !stdout(&out).contains("HIDDEN"),
        "a mount's hidden files showed"
    );
    assert!(stderr(&out).contains("mounted inside"), "{}", stderr(&out));

    // Twenty nested indexes.
    let nested = user_dir(&s, "nested");
    write_layout(
        &nested,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig::default(),
    );
    for _ in 0..20 {
        let index = std::fs::read(nested.join("index.json")).unwrap();
        let hex = sha256_of(&index);
        std::fs::write(nested.join("blobs/sha256").join(&hex), &index).unwrap();
        let wrapper = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"), "size": index.len()}]});
        std::fs::write(nested.join("index.json"), wrapper.to_string()).unwrap();
    }
    chown_tree(&nested);
    let out = run_for_user(&s, &[nested.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nested indexes"), "{}", stderr(&out));
}

/// A layer already in the node's store was handed to anyone whose layout
/// named its digest: a user who learnt a private image's diff_ids got its
/// files without ever holding them. Now a user's layout or archive must
/// hold each layer it names (checked once per file version).
#[test]
fn naming_a_layers_digest_does_not_give_the_layer() {
    needs_root();
    let s = Sandbox::new();
    let secret = || Layer::new().file("secret", b"ROOT-ONLY-SECRET\n", 0o644);
    let closed = root_only_dir(&s, "closed");
    let layers = || {
        vec![
            (base_layer().finish(), Compression::Gzip),
            (secret().finish(), Compression::Gzip),
        ]
    };
    write_layout(&closed.join("image"), layers(), &RunConfig::default());
    let root_image = closed.join("image");
    assert_eq!(
        ok(s.berth(&["run", root_image.to_str().unwrap(), "cat", "/secret"])),
        "ROOT-ONLY-SECRET\n"
    );
    // The user's layout names the same layers, without the secret one's blob.
    let forged = user_dir(&s, "forged");
    write_layout(&forged, layers(), &RunConfig::default());
    let secret_blob = layout_layer_digests(&forged)[1].replace("sha256:", "");
    let blob = forged.join("blobs/sha256").join(secret_blob);
    let len = std::fs::metadata(&blob).unwrap().len() as usize;
    std::fs::write(&blob, vec![0u8; len]).unwrap();
    chown_tree(&forged);
    let out = run_for_user(&s, &[forged.to_str().unwrap(), "cat", "/secret"]);
    assert!(
        !stdout(&out).contains("ROOT-ONLY-SECRET"),
        "a layer was given for its digest alone"
    );
    assert!(!out.status.success());
    // With the real blob the user holds the layer, and may use it.
    let honest = user_dir(&s, "honest");
    write_layout(&honest, layers(), &RunConfig::default());
    chown_tree(&honest);
    assert_eq!(
        ok(run_for_user(
            &s,
            &[honest.to_str().unwrap(), "cat", "/secret"]
        )),
        "ROOT-ONLY-SECRET\n"
    );
}

/// The same attacks through the Slurm plugin (its helper resolves images
/// the way `berth run --user` does, as root for the job's user): a layout
/// blob symlinked to a root-only layer, a directory image swapped for a
/// symlink to a root-only directory while steps start, a squashfs swapped
/// for a trojan while steps import it, and a root-only path that answers
/// as a missing one.
#[test]
fn the_plugin_opens_the_jobs_images_with_the_users_rights() {
    needs_root();
    let (s, cluster, _image) = cluster_with_standard_image();
    let closed = root_only_dir(&s, "closed");

    // 3: a symlinked layer blob.
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
    let out = cluster.srun(&[
        &format!("--container-image={}", layout.display()),
        "cat",
        "/etc/motd",
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));

    // No oracle: a root-only path answers as a missing one.
    std::fs::write(closed.join("there.sqsh"), b"hsqs").unwrap();
    let message = |name: &str| {
        let out = cluster.srun(&[
            &format!("--container-image={}", closed.join(name).display()),
            "true",
        ]);
        assert!(!out.status.success());
        stderr(&out)
            .lines()
            .find(|l| l.contains("berth:"))
            .unwrap_or_default()
            .replace(name, "NAME")
    };
    assert_eq!(message("there.sqsh"), message("absent.sqsh"));

    // 4 and 2: swaps while steps start.
    rootfs_dir(&closed.join("victim"), "ROOT-ONLY-SECRET");
    let race = user_dir(&s, "race");
    let mine = race.join("img");
    rootfs_dir(&mine, "mine");
    let link = race.join("link");
    std::os::unix::fs::symlink(closed.join("victim"), &link).unwrap();
    let squash = |name: &str| {
        let root = s.path().join(format!("{name}-root"));
        rootfs_dir(&root, name);
        let file = race.join(format!("{name}.sqsh"));
        let status = Command::new("mksquashfs")
            .arg(&root)
            .arg(&file)
            .args(["-noappend", "-quiet", "-no-progress", "-no-xattrs"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        file
    };
    let (good, trojan) = (squash("good"), squash("trojan"));
    let (good_hex, trojan_hex) = (
        sha256_of(&std::fs::read(&good).unwrap()),
        sha256_of(&std::fs::read(&trojan).unwrap()),
    );
    chown_tree(&race);
    let layers = s.store().join("layers/sha256");
    for (image, other) in [(&mine, &link), (&good, &trojan)] {
        let swapper = Swapper::start(image, other, Some(32));
        for _ in 0..25 {
            let out = cluster.srun(&[
                &format!("--container-image={}", image.display()),
                "/bin/busybox",
                "cat",
                "/marker",
            ]);
            assert!(
                !stdout(&out).contains("ROOT-ONLY-SECRET"),
                "a step saw a root-only directory"
            );
            for (hex, marker) in [(&good_hex, "good"), (&trojan_hex, "trojan")] {
                if let Ok(text) = std::fs::read_to_string(layers.join(hex).join("marker")) {
                    assert_eq!(
                        text, marker,
                        "the store holds other content under {marker}'s digest"
                    );
                }
            }
        }
        let is_dir = image == &mine;
        let swaps = swapper.stop(image, other, is_dir);
        assert!(swaps > 500, "only {swaps} swaps");
    }
}

/// From a second outside review: `berth slurm-save` joined whatever mount
/// namespace the given pid had (a pid the keeper left could be the user's
/// own `unshare` by then), and a FIFO was accepted as a mount source. Now
/// the save only enters a berth keeper (root's, running berth, pinned by a
/// pidfd), and mount sources are files or directories.
#[test]
fn save_enters_only_a_keeper_and_mounts_are_files_or_directories() {
    needs_root();
    let s = Sandbox::new();
    let out_dir = user_dir(&s, "out");
    let (uid, gid) = test_user();
    let mut users_own = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("30")
            .uid(uid)
            .gid(gid)
            .spawn()
            .unwrap()
    };
    let target = out_dir.join("x.sqsh");
    let out = s.berth(&[
        "slurm-save",
        "--pid",
        &users_own.id().to_string(),
        "--output",
        target.to_str().unwrap(),
        "--user",
        &format!("{uid}:{gid}"),
    ]);
    let _ = users_own.kill();
    let _ = users_own.wait();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a berth keeper"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_entries(&out_dir), 0, "something was written");

    let fifo = out_dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    chown_tree(&out_dir);
    let image = s.standard_image();
    let mount = format!("{}:/f", fifo.display());
    let out = run_for_user(&s, &["-m", &mount, image.to_str().unwrap(), "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
}
