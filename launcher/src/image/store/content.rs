//! Reading what goes into the store: a blob's compression and content,
//! digests checked as bytes pass, a file version's identity, a tree's size,
//! and removing a half-made tree.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::super::oci::{sha256_hex, Compression};
use super::{LayerMeta, StoreError};

/// The hex part of a `sha256:` digest.
pub fn hex_of(digest: &str) -> Result<&str, StoreError> {
    sha256_hex(digest).ok_or_else(|| StoreError::BadDigest(digest.to_string()))
}

/// A reader of `blob`'s uncompressed content.
pub(super) fn decompress<'a>(
    compression: Compression,
    blob: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
    })
}

/// What identifies one version of an open file, for whom: whose rights
/// opened it (a remembered fact is never another user's), device, inode,
/// birth time (where the filesystem keeps one), size, modification and
/// change times (a write changes the ctime, which no user can set back).
pub fn file_version(
    fd: std::os::fd::BorrowedFd<'_>,
    user: Option<&crate::as_user::UserRights>,
) -> io::Result<String> {
    let m = File::from(fd.try_clone_to_owned()?).metadata()?;
    let whose = user.map_or_else(|| "caller".to_string(), |u| format!("uid {}", u.uid));
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!(
        "{whose}:{}:{}:{born}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Compares a computed hex digest with the expected one.
pub(super) fn check_digest(
    actual: String,
    expected_hex: &str,
    digest: &str,
    which: &'static str,
) -> Result<(), StoreError> {
    if actual == expected_hex {
        Ok(())
    } else {
        Err(StoreError::DigestMismatch {
            digest: digest.to_string(),
            which,
            actual,
        })
    }
}

/// Sizes a directory tree (file bytes and entries), without following symlinks.
pub fn measure(path: &Path) -> LayerMeta {
    let mut meta = LayerMeta::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            meta.entries += 1;
            if m.is_dir() {
                stack.push(entry.path());
            } else {
                meta.bytes += m.len();
            }
        }
    }
    meta
}

/// Guesses a layer blob's compression from its first bytes (docker-archive
/// layers carry no media type).
pub fn sniff_compression<R: Read>(reader: R) -> io::Result<(Compression, BufReader<R>)> {
    let mut buffered = BufReader::with_capacity(64 * 1024, reader);
    let head = buffered.fill_buf()?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    Ok((compression, buffered))
}

/// Makes every entry below `root` (not `root` itself) owned by 0:0,
/// without following symlinks; entries already root's are left alone.
pub(super) fn give_tree_to_root(root: &Path) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if (meta.uid(), meta.gid()) != (0, 0) {
                std::os::unix::fs::lchown(entry.path(), Some(0), Some(0))?;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Removes a directory tree that may hold read-only directories.
pub fn remove_tree(path: &Path) {
    fn make_writable(path: &Path) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.is_dir() {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
                if let Ok(entries) = fs::read_dir(path) {
                    for e in entries.flatten() {
                        make_writable(&e.path());
                    }
                }
            }
        }
    }
    if fs::remove_dir_all(path).is_err() {
        make_writable(path);
        if let Err(e) = fs::remove_dir_all(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary directory");
        }
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The hex sha256 of everything read.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
