//! Test images: layer tars built entry by entry (hostile ones too), OCI
//! layouts (single and multi-platform), the busybox base layer with the
//! probe, the standard three-layer image and big benchmark images.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::probe_path;

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
        if bytes.len() > 100 && link.is_none() {
            // A long (honest) name: a GNU long-name entry carries it.
            self.builder.append_data(&mut h, name, data).unwrap();
            return;
        }
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

/// Debian 12 as an OCI image (one uncompressed layer, its files root's as
/// debootstrap left them, dpkg and apt inside), made from the bookworm root
/// `scripts/slurm-roots.sh` keeps, at `dir`; docs, man pages, locales and
/// cached .debs left out.
pub fn write_debian_image(dir: &Path) {
    let root = Path::new("/var/cache/berth-tests/roots/bookworm");
    assert!(
        root.join("usr/bin/apt-get").exists(),
        "no Debian root at {}: run scripts/slurm-roots.sh",
        root.display()
    );
    let out = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C"])
        .arg(root)
        .args([
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./dev/*",
            "--exclude=./var/cache/apt/archives/*.deb",
            "--exclude=./usr/share/doc/*",
            "--exclude=./usr/share/man/*",
            "--exclude=./usr/share/locale/*",
            "-cf",
            "-",
            ".",
        ])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar of the Debian root failed");
    let run = RunConfig {
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cmd: vec!["/bin/bash".into()],
        ..Default::default()
    };
    write_layout(dir, vec![(out.stdout, Compression::None)], &run);
}

/// A Debian package `berth-hello` (version 1.0) holding
/// `/usr/bin/berth-hello`, a shell script printing "hello from a package",
/// built with dpkg-deb at `path`.
pub fn write_hello_deb(path: &Path) {
    let tree = path.with_extension("tree");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        "Package: berth-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: berth tests <t@example.org>\nDescription: a package the tests install\n",
    )
    .unwrap();
    let script = tree.join("usr/bin/berth-hello");
    std::fs::write(&script, "#!/bin/sh\necho hello from a package\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(path)
        .output()
        .expect("dpkg-deb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&tree).unwrap();
}
