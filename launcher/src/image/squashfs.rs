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
use super::store::{file_digest, Store, StoreError};
use super::ImageError;

/// The squashfs magic, `hsqs`.
pub fn is_squashfs(path: &Path) -> bool {
    let mut head = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && &head == b"hsqs"
}

/// Imports a squashfs file and records it as `name` (default: the path).
pub fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    allow_setuid: bool,
) -> Result<ImageRecord, ImageError> {
    let shown = path.display().to_string();
    let digest = file_digest(path).map_err(|e| ImageError::Invalid {
        image: shown.clone(),
        message: e.to_string(),
    })?;
    if let Some(lock) = store.lock_missing_layer(&digest)? {
        store.populate_layer(&lock, &digest, |tmp| extract(path, tmp, allow_setuid))?;
    }
    let record = ImageRecord {
        name: name.unwrap_or(&shown).to_string(),
        source: "squashfs".into(),
        id: digest.clone(),
        manifest_digest: None,
        layers: vec![digest],
        config: Default::default(),
        created: records::now(),
    };
    records::save(store, &record)?;
    Ok(record)
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

/// Removes device nodes and (unless allowed) setuid/setgid bits below `root`.
fn neutralise(root: &Path, allow_setuid: bool) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_char_device() || kind.is_block_device() {
                tracing::warn!(entry = %entry.path().display(), "removing device node from squashfs image");
                fs::remove_file(entry.path())?;
            } else if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && !allow_setuid {
                let mode = entry.metadata()?.permissions().mode();
                if mode & 0o6000 != 0 {
                    fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode & 0o1777))?;
                }
            }
        }
    }
    Ok(())
}
