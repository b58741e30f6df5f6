//! Test kit for berth's end-to-end tests: builds OCI image layouts (busybox,
//! the probe, hostile layers), finds the binaries, runs berth as root or as an
//! unprivileged test user, and checks for leftovers.

pub mod registry;
pub mod slurm;
pub mod vm;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The unprivileged user the tests run rootless berth as.
pub const TEST_USER: &str = "berth-test";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Builds one layer tar, entry by entry, including entries no honest tool writes.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    /// Appends an entry with a raw name (no validation: hostile names allowed).
    fn raw(&mut self, mut h: tar::Header, name: &str, link: Option<&str>, data: &[u8]) {
        let bytes = name.as_bytes();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..bytes.len()].copy_from_slice(bytes);
        if let Some(link) = link {
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.raw(
            Self::header(tar::EntryType::Directory, mode, 0),
            path,
            None,
            &[],
        );
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        self.raw(
            Self::header(tar::EntryType::Regular, mode, data.len() as u64),
            path,
            None,
            data,
        );
        self
    }

    /// A regular file owned by `uid`.
    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        self.raw(h, path, None, data);
        self
    }

    /// A symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.raw(
            Self::header(tar::EntryType::Symlink, 0o777, 0),
            path,
            Some(target),
            &[],
        );
        self
    }

    /// A hardlink.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.raw(
            Self::header(tar::EntryType::Link, 0o644, 0),
            path,
            Some(target),
            &[],
        );
        self
    }

    /// A character device node.
    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, path, None, &[]);
        self
    }

    /// An OCI whiteout hiding `dir/name` of lower layers.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = format!("{dir}/.wh.{name}");
        self.file(&path, b"", 0o644)
    }

    /// An opaque marker: `dir` hides everything of lower layers.
    pub fn opaque(self, dir: &str) -> Self {
        let path = format!("{dir}/.wh..wh..opq");
        self.file(&path, b"", 0o644)
    }

    /// A host file copied in at the same path (and mode).
    pub fn host_file(self, host: &Path) -> Self {
        let data = std::fs::read(host).unwrap_or_else(|e| panic!("read {}: {e}", host.display()));
        let mode = std::fs::metadata(host).unwrap().permissions().mode() & 0o7777;
        let path = host.to_str().unwrap().trim_start_matches('/').to_string();
        self.file(&path, &data, mode)
    }

    /// The tar bytes.
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// An image's runtime config (`config` of the image config blob).
#[derive(Default, Clone)]
pub struct RunConfig {
    /// Env.
    pub env: Vec<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// WorkingDir.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn compress(data: &[u8], c: Compression) -> (Vec<u8>, &'static str) {
    match c {
        Compression::None => (data.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compression::Zstd => (
            zstd::encode_all(data, 1).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

/// Layer tars and how to compress each, bottom first.
pub type LayerBlobs = Vec<(Vec<u8>, Compression)>;

/// Writes blobs, config and manifest of one image into `dir`'s blob store
/// and returns the manifest descriptor.
fn write_image_blobs(
    dir: &Path,
    layers: LayerBlobs,
    run: &RunConfig,
    arch: &str,
) -> serde_json::Value {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let hex = sha256(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        format!("sha256:{hex}")
    };
    let mut diff_ids = Vec::new();
    let mut layer_descs = Vec::new();
    for (tar, c) in &layers {
        diff_ids.push(format!("sha256:{}", sha256(tar)));
        let (blob, media_type) = compress(tar, *c);
        let digest = put(&blob);
        layer_descs.push(
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": blob.len()}),
        );
    }
    let mut cfg = serde_json::json!({"Env": run.env});
    if !run.entrypoint.is_empty() {
        cfg["Entrypoint"] = serde_json::json!(run.entrypoint);
    }
    if !run.cmd.is_empty() {
        cfg["Cmd"] = serde_json::json!(run.cmd);
    }
    if let Some(w) = &run.working_dir {
        cfg["WorkingDir"] = serde_json::json!(w);
    }
    if let Some(u) = &run.user {
        cfg["User"] = serde_json::json!(u);
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest_bytes);
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_bytes.len(),
        "platform": {"architecture": arch, "os": "linux"}
    })
}

fn write_index(dir: &Path, entry: serde_json::Value) {
    let mut entry = entry;
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes an OCI image layout at `dir` from layers (bottom first).
pub fn write_layout(dir: &Path, layers: LayerBlobs, run: &RunConfig) {
    let mut desc = write_image_blobs(dir, layers, run, "amd64");
    desc.as_object_mut().unwrap().remove("platform");
    write_index(dir, desc);
}

/// Writes a multi-platform OCI layout: an image index with one image per
/// (architecture, layers).
pub fn write_multiarch_layout(dir: &Path, images: Vec<(&str, LayerBlobs)>, run: &RunConfig) {
    let manifests: Vec<serde_json::Value> = images
        .into_iter()
        .map(|(arch, layers)| write_image_blobs(dir, layers, run, arch))
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let bytes = serde_json::to_vec(&index).unwrap();
    let hex = sha256(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), &bytes).unwrap();
    write_index(
        dir,
        serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"), "size": bytes.len()}),
    );
}

/// Busybox applets linked in the base layer.
const APPLETS: &[&str] = &[
    "sh", "ls", "id", "cat", "ps", "hostname", "mount", "echo", "sleep", "true", "false", "touch",
    "mknod", "umount", "kill", "env", "pwd", "stat", "test", "grep", "mkdir", "rm", "wc", "head",
    "insmod", "chmod", "readlink", "find", "seq",
];

/// The busybox-static base layer: /bin with busybox applets, /etc/passwd and
/// /etc/group, the probe binary with the shared libraries it needs, and a
/// setuid-root copy of the probe at /bin/suid-probe.
pub fn base_layer() -> Layer {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox missing: apt-get install busybox-static");
    let mut layer = Layer::new()
        .dir("bin", 0o755)
        .dir("etc", 0o755)
        .dir("tmp", 0o1777)
        .dir("root", 0o700)
        .file("bin/busybox", &busybox, 0o755);
    for applet in APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer = layer
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644);
    let probe = probe_path();
    let probe_data = std::fs::read(&probe).unwrap();
    layer = layer.file("bin/berth-probe", &probe_data, 0o755).file(
        "bin/suid-probe",
        &probe_data,
        0o4755,
    );
    for lib in shared_libraries(&probe) {
        layer = layer.host_file(&lib);
    }
    layer
}

/// The shared libraries `binary` needs, from ldd.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

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
        let text = format!("[store]\npath = \"{}\"\n{extra}\n", self.store().display());
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
    if let Some(ids) = lookup() {
        return ids;
    }
    let _ = Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", TEST_USER])
        .status();
    lookup().expect("cannot create the test user (useradd)")
}

/// Whether this process is root (the tests need it to run berth both ways).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (returns early from) a test that needs root, saying so.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "SKIPPED: this test needs root (it runs berth as root and as an unprivileged user)"
            );
            return;
        }
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

/// Writes the standard test image at `dir`: busybox and the probe in a gzip
/// layer, a zstd layer with a whiteout, an uncompressed layer with an opaque
/// directory; Env, WorkingDir and Cmd set.
pub fn write_standard_image(dir: &Path) {
    let layer1 = base_layer()
        .dir("data", 0o755)
        .file("data/old", b"old\n", 0o644)
        .file("etc/gone", b"gone\n", 0o644)
        .file("etc/motd", b"layer1\n", 0o644);
    let layer2 = Layer::new()
        .whiteout("etc", "gone")
        .file("etc/motd", b"layer2\n", 0o644)
        .dir("work", 0o755);
    let layer3 = Layer::new()
        .dir("data", 0o755)
        .opaque("data")
        .file("data/new", b"new\n", 0o644);
    let run = RunConfig {
        env: vec!["PATH=/bin".into(), "FROM_IMAGE=yes".into()],
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "echo default-cmd $FROM_IMAGE; pwd".into(),
        ],
        working_dir: Some("/work".into()),
        ..RunConfig::default()
    };
    write_layout(
        dir,
        vec![
            (layer1.finish(), Compression::Gzip),
            (layer2.finish(), Compression::Zstd),
            (layer3.finish(), Compression::None),
        ],
        &run,
    );
}

/// The layer blob digests of a single-image OCI layout written by this kit.
pub fn layout_layer_digests(dir: &Path) -> Vec<String> {
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
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

/// Entries in a directory (0 when it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Writes a big image of a realistic shape for benchmarks: `layers` gzip
/// layers holding `files` files in all, about `megabytes` MiB uncompressed,
/// half incompressible (so gzip halves it, as with real images).
pub fn write_big_image(dir: &Path, layers: usize, files: usize, megabytes: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let per_file = megabytes * 1024 * 1024 / files;
    let per_layer = files.div_ceil(layers);
    let text = b"the quick brown fox jumps over the lazy dog; berth benchmark data line\n";
    let mut blobs = vec![(base_layer().finish(), Compression::Gzip)];
    for l in 0..layers {
        let mut layer = Layer::new().dir(&format!("opt/layer{l:02}"), 0o755);
        for f in 0..per_layer.min(files - l * per_layer) {
            let size = per_file / 2 + (random() as usize % per_file.max(1));
            let mut data = Vec::with_capacity(size);
            while data.len() < size / 2 {
                data.extend_from_slice(&random().to_le_bytes());
            }
            while data.len() < size {
                data.extend_from_slice(text);
            }
            data.truncate(size);
            let dir = format!("opt/layer{l:02}/d{:02}", f % 50);
            if f < 50 {
                layer = layer.dir(&dir, 0o755);
            }
            layer = layer.file(&format!("{dir}/f{f:05}"), &data, 0o644);
        }
        blobs.push((layer.finish(), Compression::Gzip));
    }
    write_layout(
        dir,
        blobs,
        &RunConfig {
            env: vec!["PATH=/bin".into()],
            ..RunConfig::default()
        },
    );
}
