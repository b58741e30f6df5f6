//! squashfs images (`.sqsh`, enroot's format): a whole root filesystem in one
//! file. Extracted once with `unsquashfs` into one store layer keyed by the
//! file's digest (loop-mounting per start would cost ~13 ms and root), then
//! checked the way tar layers are: device nodes removed, setuid/setgid bits
//! cleared unless allowed.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::records::{self, ImageRecord};
use super::store::{file_version, HashingReader, Store, StoreError};
use super::{ImageError, OpenedPath};

/// The squashfs magic, `hsqs`.
pub const MAGIC: &[u8] = b"hsqs";

/// Imports a squashfs file and records it as `name` (default: the path).
///
/// The file is the user's, who may change it at any moment: it is hashed
/// from the descriptor the user opened, and when its layer is not in the
/// store yet, copied (and hashed again) into a private file in the store's
/// tmp/ that only root can touch; the layer is extracted from that copy and
/// keyed by the copy's digest. What reaches the store is what was hashed.
pub fn import(
    store: &Store,
    file: &OpenedPath,
    name: Option<&str>,
    allow_setuid: bool,
) -> Result<ImageRecord, ImageError> {
    let shown = file.path.display().to_string();
    let bad = |e: std::io::Error| ImageError::Invalid {
        image: shown.clone(),
        message: e.to_string(),
    };
    check_dense_and_small(file, store.max_layer_bytes()).map_err(bad)?;
    let mut digest = file_digest(store, file).map_err(bad)?;
    if !store.has_layer(&digest) {
        let copy = PrivateCopy::of(store, file).map_err(bad)?;
        digest = copy.digest.clone();
        if let Some(lock) = store.lock_missing_layer(&digest)? {
            store.populate_layer(&lock, &digest, |tmp| extract(&copy.path, tmp, allow_setuid))?;
        }
    }
    let record = ImageRecord {
        name: name.unwrap_or(&shown).to_string(),
        source: "squashfs".into(),
        id: digest.clone(),
        manifest_digest: None,
        layers: vec![digest],
        config: Default::default(),
        created: records::now(),
        public: false,
        pulled_by: None,
    };
    records::save(store, &record)?;
    Ok(record)
}

/// The file's digest: hashed from the descriptor, or remembered from an
/// earlier hash of this very file version (same inode, size and times: a
/// multi-gigabyte image is not read again by every step of every job).
/// A remembered digest was computed from content this file once held, so
/// it never names content its user did not supply.
fn file_digest(store: &Store, file: &OpenedPath) -> std::io::Result<String> {
    use std::os::fd::AsFd;
    let identity = || file_version(file.fd.as_fd(), file.user.as_ref());
    let before = identity()?;
    let remembered = store.remembered(&format!("digest\0{before}"));
    if let Ok(text) = fs::read_to_string(&remembered) {
        if super::oci::sha256_hex(&text).is_some() {
            return Ok(text);
        }
    }
    let mut reader = HashingReader::new(file.reader()?);
    std::io::copy(&mut reader, &mut std::io::sink())?;
    let digest = format!("sha256:{}", reader.finish());
    if identity()? == before {
        let _ = fs::write(&remembered, &digest);
    }
    Ok(digest)
}

/// Refuses a file larger than the store may hold, or with holes: a real
/// squashfs image has none, and a sparse one would cost root its whole
/// apparent size in hashing and in the private copy.
fn check_dense_and_small(file: &OpenedPath, max: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = nix::sys::stat::fstat(file.fd.as_raw_fd())
        .map_err(std::io::Error::from)?
        .st_size as u64;
    if size > max {
        return Err(std::io::Error::other(format!(
            "{size} bytes, more than the store may hold (store.max_size)"
        )));
    }
    let first_hole = nix::unistd::lseek(file.fd.as_raw_fd(), 0, nix::unistd::Whence::SeekHole)
        .map(|at| at as u64)
        .unwrap_or(size);
    if first_hole < size {
        return Err(std::io::Error::other(
            "a sparse file (it has holes): not a squashfs image",
        ));
    }
    Ok(())
}

/// A copy of a user's file in the store's tmp/ (mode 0600, root's), removed
/// when dropped.
struct PrivateCopy {
    path: std::path::PathBuf,
    digest: String,
}

impl PrivateCopy {
    fn of(store: &Store, file: &OpenedPath) -> std::io::Result<PrivateCopy> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = store
            .tmp_dir()
            .join(format!("import.{}.sqsh", std::process::id()));
        let mut copy = PrivateCopy {
            path,
            digest: String::new(),
        };
        remove_stale_copies(store);
        let _ = fs::remove_file(&copy.path);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&copy.path)?;
        let mut reader = HashingReader::new(file.reader()?);
        std::io::copy(&mut reader, &mut out)?;
        out.sync_data()?;
        copy.digest = format!("sha256:{}", reader.finish());
        Ok(copy)
    }
}

/// Removes private copies a killed import left (their process is gone).
fn remove_stale_copies(store: &Store) {
    let Ok(entries) = fs::read_dir(store.tmp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("import."))
            .and_then(|n| n.strip_suffix(".sqsh"));
        if let Some(pid) = pid {
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Unpacks the squashfs file into `dest` (which becomes the layer) and
/// neutralises what an image may not bring.
fn extract(path: &Path, dest: &Path, allow_setuid: bool) -> Result<(), StoreError> {
    let failed = |message: String| StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(message),
    };
    let out = Command::new("unsquashfs")
        .args([
            "-no-progress",
            "-quiet",
            "-no-xattrs",
            "-ignore-errors",
            "-f",
            "-d",
        ])
        .arg(dest)
        .arg(path)
        .output()
        .map_err(|e| {
            failed(format!(
                "cannot run unsquashfs (apt-get install squashfs-tools): {e}"
            ))
        })?;
    // Without root, device nodes cannot be created: that is the one error
    // accepted (they would be removed anyway). Anything else fails the import.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let other_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(l.contains("could not create character device")
                || l.contains("could not create block device"))
        })
        .collect();
    if !out.status.success() && !other_errors.is_empty() {
        return Err(failed(format!(
            "unsquashfs: {}",
            other_errors.last().unwrap_or(&"failed")
        )));
    }
    neutralise(dest, allow_setuid).map_err(|source| StoreError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

/// Removes device nodes and (unless allowed) setuid/setgid bits below
/// `root`, and gives every entry to the extractor (unsquashfs as root keeps
/// the image's owners; a store layer's files are all root's, see unpack).
fn neutralise(root: &Path, allow_setuid: bool) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let own = |path: &Path, meta: &fs::Metadata| -> std::io::Result<()> {
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    };
    own(root, &fs::symlink_metadata(root)?)?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_char_device() || kind.is_block_device() {
                tracing::warn!(entry = %entry.path().display(), "removing device node from squashfs image");
                fs::remove_file(entry.path())?;
                continue;
            }
            // After the chown, which clears setuid bits itself.
            let meta = entry.metadata()?;
            own(&entry.path(), &meta)?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && !allow_setuid {
                let mode = meta.permissions().mode();
                if mode & 0o6000 != 0 {
                    fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode & 0o1777))?;
                }
            }
        }
    }
    Ok(())
}
