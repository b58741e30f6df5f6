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
    if !store.has_layer(&digest) {
        let lock = store.lock_layer(&digest)?;
        if !store.has_layer(&digest) {
            store.populate_layer(&lock, &digest, |tmp| {
                let root = tmp.join("root");
                let out = Command::new("unsquashfs")
                    .args(["-no-progress", "-quiet", "-no-xattrs", "-d"])
                    .arg(&root)
                    .arg(path)
                    .output()
                    .map_err(|e| StoreError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::new(
                            e.kind(),
                            format!("cannot run unsquashfs (apt-get install squashfs-tools): {e}"),
                        ),
                    })?;
                if !out.status.success() {
                    let why = String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("failed")
                        .to_string();
                    return Err(StoreError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(format!("unsquashfs: {why}")),
                    });
                }
                neutralise(&root, allow_setuid).map_err(|source| StoreError::Io {
                    path: root.clone(),
                    source,
                })?;
                // The extracted root becomes the layer directory itself.
                for entry in fs::read_dir(&root)
                    .map_err(|source| StoreError::Io {
                        path: root.clone(),
                        source,
                    })?
                    .flatten()
                {
                    fs::rename(entry.path(), tmp.join(entry.file_name())).map_err(|source| {
                        StoreError::Io {
                            path: entry.path(),
                            source,
                        }
                    })?;
                }
                let mode = fs::metadata(&root)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0o755);
                fs::remove_dir(&root).map_err(|source| StoreError::Io {
                    path: root.clone(),
                    source,
                })?;
                fs::set_permissions(tmp, fs::Permissions::from_mode(mode & 0o7777)).map_err(
                    |source| StoreError::Io {
                        path: tmp.to_path_buf(),
                        source,
                    },
                )?;
                Ok(())
            })?;
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
    };
    records::save(store, &record)?;
    Ok(record)
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
