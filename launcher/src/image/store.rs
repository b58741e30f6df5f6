//! The content-addressed layer store.
//!
//! ```text
//! <root>/layers/sha256/<diff_id>/   one extracted layer (overlay format), never changed once there
//! <root>/tmp/<diff_id>.<pid>/        an extraction in progress; renamed into layers/ when verified
//! <root>/locks/<diff_id>.lock        flock held while a layer is extracted
//! <root>/seccomp/<sha256>.bpf        compiled seccomp filters
//! <root>/mnt/                        mount point used inside each container's private mount namespace
//! ```
//! A layer directory exists only when its content was verified against both
//! digests: extraction happens in `tmp/` and ends with an atomic rename, so a
//! crash or a refused layer leaves nothing a later run would trust.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::oci::{sha256_hex, Compression};
use super::unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackReport};

/// A store error, naming the path or the layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store directory could not be made or read.
    #[error("image store {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A digest string is malformed.
    #[error("malformed digest {0:?} (expected sha256:<64 hex digits>)")]
    BadDigest(String),
    /// The layer was refused by the safe extractor.
    #[error("layer {digest}: {source}")]
    Unpack {
        /// The layer's blob digest.
        digest: String,
        /// Why.
        source: UnpackError,
    },
    /// The layer's content does not match its digest.
    #[error("layer {digest}: {which} digest mismatch (got sha256:{actual}); the blob is corrupt or was tampered with")]
    DigestMismatch {
        /// The layer's blob digest.
        digest: String,
        /// "compressed" or "uncompressed".
        which: &'static str,
        /// What the content hashed to.
        actual: String,
    },
}

/// An open layer store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    privileged: bool,
    allow_setuid: bool,
}

impl Store {
    /// Opens (creating if needed) the store at `root`. `privileged` says berth
    /// runs as root (ownership kept, trusted xattrs).
    pub fn open(root: &Path, privileged: bool, allow_setuid: bool) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
            privileged,
            allow_setuid,
        };
        for dir in ["layers/sha256", "tmp", "locks", "seccomp", "mnt"] {
            let path = root.join(dir);
            if !path.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&path)
                    .map_err(|source| StoreError::Io {
                        path: path.clone(),
                        source,
                    })?;
            }
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for compiled seccomp filters.
    pub fn seccomp_dir(&self) -> PathBuf {
        self.root.join("seccomp")
    }

    /// The mount point used inside container mount namespaces.
    pub fn mount_point(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// Whether the store keeps ownership and uses trusted xattrs.
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// Where the layer with uncompressed digest `diff_id` lives, whether or not it exists yet.
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf, StoreError> {
        let hex = sha256_hex(diff_id).ok_or_else(|| StoreError::BadDigest(diff_id.to_string()))?;
        Ok(self.root.join("layers/sha256").join(hex))
    }

    /// Makes sure the layer `diff_id` is in the store, extracting `blob` (whose
    /// compressed digest is `digest`) when it is not. Returns the layer path and,
    /// when it extracted, what extraction did.
    pub fn ensure_layer(
        &self,
        diff_id: &str,
        digest: &str,
        compression: Compression,
        open_blob: impl FnOnce() -> io::Result<File>,
    ) -> Result<(PathBuf, Option<UnpackReport>), StoreError> {
        let final_path = self.layer_path(diff_id)?;
        if final_path.is_dir() {
            return Ok((final_path, None));
        }
        let hex = sha256_hex(diff_id).ok_or_else(|| StoreError::BadDigest(diff_id.to_string()))?;
        let digest_hex =
            sha256_hex(digest).ok_or_else(|| StoreError::BadDigest(digest.to_string()))?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let lock_path = self.root.join("locks").join(format!("{hex}.lock"));
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, e)| StoreError::Io {
                path: lock_path.clone(),
                source: e.into(),
            },
        )?;
        if final_path.is_dir() {
            return Ok((final_path, None)); // someone else finished it while we waited
        }
        self.remove_stale_tmp(hex);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{hex}.{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_err(&tmp))?;
        let result = (|| {
            let blob = open_blob().map_err(io_err(&tmp))?;
            let mut compressed = HashingReader::new(blob);
            let report = {
                let decompressed: Box<dyn Read> = match compression {
                    Compression::None => Box::new(&mut compressed),
                    Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut compressed)),
                    Compression::Zstd => {
                        Box::new(zstd::stream::read::Decoder::new(&mut compressed).map_err(
                            |e| StoreError::Unpack {
                                digest: digest.to_string(),
                                source: UnpackError::Tar(e),
                            },
                        )?)
                    }
                };
                let mut uncompressed = HashingReader::new(decompressed);
                let options = UnpackOptions {
                    privileged: self.privileged,
                    allow_setuid: self.allow_setuid,
                };
                let report = unpack_layer(&mut uncompressed, &tmp, options).map_err(|source| {
                    StoreError::Unpack {
                        digest: digest.to_string(),
                        source,
                    }
                })?;
                io::copy(&mut uncompressed, &mut io::sink()).map_err(|e| StoreError::Unpack {
                    digest: digest.to_string(),
                    source: UnpackError::Tar(e),
                })?;
                check_digest(uncompressed.finish(), hex, digest, "uncompressed")?;
                report
            };
            io::copy(&mut compressed, &mut io::sink()).map_err(io_err(&tmp))?;
            check_digest(compressed.finish(), digest_hex, digest, "compressed")?;
            // The layer root must be searchable by every user of the node.
            let mode = if self.privileged { 0o755 } else { 0o700 };
            let root_mode = fs::metadata(&tmp)
                .map_err(io_err(&tmp))?
                .permissions()
                .mode()
                & 0o7777;
            if root_mode == 0o700 {
                fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
                    .map_err(io_err(&tmp))?;
            }
            fs::rename(&tmp, &final_path).map_err(io_err(&final_path))?;
            Ok(report)
        })();
        match result {
            Ok(report) => {
                tracing::debug!(layer = diff_id, ?report, "layer extracted");
                Ok((final_path, Some(report)))
            }
            Err(e) => {
                remove_tree(&tmp);
                Err(e)
            }
        }
    }

    /// Removes extractions of layer `hex` that a killed process left in tmp/.
    /// Only called with the layer's lock held, so none of them is live.
    fn remove_stale_tmp(&self, hex: &str) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{hex}."))
            {
                remove_tree(&entry.path());
            }
        }
    }
}

/// Compares a computed hex digest with the expected one.
fn check_digest(
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
