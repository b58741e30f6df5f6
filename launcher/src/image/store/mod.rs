//! The content-addressed layer store, shared by every user of the node.
//!
//! ```text
//! <root>/layers/sha256/<hex>/    one extracted layer (overlay format), never changed once there
//! <root>/layers/meta/<hex>.json  its size, for `berth images` and `berth gc`
//! <root>/images/<hex>.json       image records: a name and its layers (see records.rs)
//! <root>/tmp/                    extractions and downloads in progress; renamed into place when verified
//! <root>/locks/<hex>.lock        flock held while a layer is fetched or extracted (one download per layer)
//! <root>/locks/<hex>.use         shared flock held by every running container using the layer
//! <root>/seccomp/<sha256>.bpf    compiled seccomp filters
//! <root>/mnt/                    mount point used inside each container's private mount namespace
//! <root>/access/<sha256>         remembered checks: a user may pull a private image (mtime: when), a file version holds a layer or has a digest
//! ```
//! A layer directory exists only when its content was verified: extraction
//! happens in `tmp/` and ends with an atomic rename, so a crash, a full disk
//! or a refused layer leaves nothing a later run would trust. `<hex>` of a
//! layer is its diff_id (uncompressed digest), or for a squashfs image the
//! digest of the file.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::oci::{sha256_hex, Compression};
use super::unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackReport};

mod content;
use content::{check_digest, decompress};
pub use content::{file_version, hex_of, measure, remove_tree, sniff_compression, HashingReader};

/// A store error, naming the path or the layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store path could not be made, read or written.
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
    /// A layer disappeared (removed by `berth gc`) between lookup and use.
    #[error("layer {0} was removed from the store while starting; run again")]
    LayerGone(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open layer store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    privileged: bool,
    allow_setuid: bool,
    max_layer_depth: usize,
    max_layer_bytes: u64,
}

/// The exclusive lock on one layer, held while it is fetched or extracted.
pub struct LayerLock {
    _flock: Flock<File>,
    hex: String,
}

/// Shared locks on the layers of a running container; `berth gc` never
/// removes a layer while one is held.
pub struct LayersInUse {
    _locks: Vec<Flock<File>>,
}

/// Size information kept beside each layer.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LayerMeta {
    /// Bytes of file content (apparent size).
    pub bytes: u64,
    /// Number of entries.
    pub entries: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`. `privileged` says berth
    /// runs as root (ownership kept, trusted xattrs).
    pub fn open(root: &Path, privileged: bool, allow_setuid: bool) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
            privileged,
            allow_setuid,
            max_layer_depth: super::unpack::DEFAULT_MAX_DEPTH,
            max_layer_bytes: u64::MAX,
        };
        // A node's shared store is root's alone: users reach its layers
        // only through their containers (overlayfs checks the lower layers
        // with root's rights), so whatever modes a layer's tar gives its
        // directories (a world-writable /tmp, say), nobody but root can
        // reach them on the host, nor open a lock file to hold it.
        let mode = if privileged { 0o700 } else { 0o755 };
        for dir in [
            "layers/sha256",
            "layers/meta",
            "images",
            "tmp",
            "locks",
            "seccomp",
            "mnt",
            "access",
        ] {
            let path = root.join(dir);
            if !path.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(&path)
                    .map_err(io_err(&path))?;
            }
        }
        if privileged {
            let meta = fs::symlink_metadata(root).map_err(io_err(root))?;
            if meta.uid() != 0 || !meta.is_dir() {
                return Err(StoreError::Io {
                    path: root.to_path_buf(),
                    source: io::Error::other(
                        "the store must be a directory owned by root (not a symlink)",
                    ),
                });
            }
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                    .map_err(io_err(root))?;
            }
            store.give_layers_to_root()?;
        }
        Ok(store)
    }

    /// A store made before layers dropped their tars' owners: every file of
    /// its layers becomes root's, once (`layers/.all-root` says it is done;
    /// other berths wait on the lock meanwhile).
    fn give_layers_to_root(&self) -> Result<(), StoreError> {
        let done = self.root.join("layers/.all-root");
        if done.exists() {
            return Ok(());
        }
        let (path, file) = self.lock_file("all-root.lock")?;
        let _lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
                path,
                source: e.into(),
            })?;
        if done.exists() {
            return Ok(());
        }
        let layers = self.root.join("layers/sha256");
        content::give_tree_to_root(&layers).map_err(io_err(&layers))?;
        tracing::info!(store = %self.root.display(), "the store's layer files are root's now");
        File::create(&done).map_err(io_err(&done))?;
        Ok(())
    }

    /// Sets the deepest nesting accepted in a layer (`store.max_layer_depth`).
    pub fn with_max_layer_depth(mut self, depth: usize) -> Store {
        self.max_layer_depth = depth;
        self
    }

    /// Sets the most a layer's files may add up to (`store.max_size`: a
    /// layer larger than the store could never stay in it).
    pub fn with_max_layer_bytes(mut self, bytes: u64) -> Store {
        self.max_layer_bytes = bytes;
        self
    }

    /// The most a layer (or an image file copied in) may hold.
    pub fn max_layer_bytes(&self) -> u64 {
        self.max_layer_bytes
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for compiled seccomp filters.
    pub fn seccomp_dir(&self) -> PathBuf {
        self.root.join("seccomp")
    }

    /// The stamp of `uid`'s last successful access check of the registry
    /// image `name` (its mtime says when).
    pub fn access_stamp(&self, uid: u32, name: &str) -> PathBuf {
        self.remembered(&format!("{uid}\0{name}"))
    }

    /// The mount point used inside container mount namespaces.
    pub fn mount_point(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// The directory for in-progress work.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Whether the store keeps ownership and uses trusted xattrs.
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// Where the layer `digest` (`sha256:<hex>`) lives, whether or not it exists yet.
    pub fn layer_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers/sha256").join(hex_of(digest)?))
    }

    /// Whether the layer is in the store.
    pub fn has_layer(&self, digest: &str) -> bool {
        self.layer_path(digest).is_ok_and(|p| p.is_dir())
    }

    /// Takes the exclusive lock of layer `digest` (waits for another process
    /// fetching or extracting it).
    pub fn lock_layer(&self, digest: &str) -> Result<LayerLock, StoreError> {
        let hex = hex_of(digest)?.to_string();
        let (path, file) = self.lock_file(&format!("{hex}.lock"))?;
        let flock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
                path,
                source: e.into(),
            })?;
        self.remove_stale_tmp(&hex);
        Ok(LayerLock { _flock: flock, hex })
    }

    /// The lock of layer `digest` when the layer is still missing once the
    /// lock is held (a concurrent fetch may have finished it meanwhile);
    /// None when the layer is there and there is nothing to do.
    pub fn lock_missing_layer(&self, digest: &str) -> Result<Option<LayerLock>, StoreError> {
        if self.has_layer(digest) {
            return Ok(None);
        }
        let lock = self.lock_layer(digest)?;
        Ok((!self.has_layer(digest)).then_some(lock))
    }

    /// Takes shared "in use" locks on the layers (by digest) and checks they
    /// are still there, for the lifetime of a container. Touches each lock so
    /// `berth gc` knows what was used last.
    pub fn hold_layers(&self, digests: &[String]) -> Result<LayersInUse, StoreError> {
        let mut locks = Vec::with_capacity(digests.len());
        for digest in digests {
            let (path, file) = self.lock_file(&format!("{}.use", hex_of(digest)?))?;
            let now = nix::sys::time::TimeSpec::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            let _ = nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(&file), &now, &now);
            let flock =
                Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| StoreError::Io {
                    path,
                    source: e.into(),
                })?;
            if !self.has_layer(digest) {
                return Err(StoreError::LayerGone(digest.clone()));
            }
            locks.push(flock);
        }
        Ok(LayersInUse { _locks: locks })
    }

    /// Makes sure layer `diff_id` is in the store, extracting the blob from
    /// `open_blob` when it is not. `blob_digest` (the compressed digest) is
    /// checked when given. With `proof` (the identity of a user's file the
    /// blob comes from, see [`file_version`]), a layer already in the store
    /// is only handed out once that file was shown to hold it: a user
    /// cannot get a layer by naming its digest. Returns the layer path and,
    /// when it extracted, what extraction did.
    pub fn ensure_layer(
        &self,
        diff_id: &str,
        blob_digest: Option<&str>,
        compression: Compression,
        proof: Option<&str>,
        open_blob: impl FnOnce() -> io::Result<Box<dyn Read>>,
    ) -> Result<(PathBuf, Option<UnpackReport>), StoreError> {
        let final_path = self.layer_path(diff_id)?;
        let Some(lock) = self.lock_missing_layer(diff_id)? else {
            if let Some(identity) = proof {
                self.prove_possession(diff_id, identity, compression, open_blob)?;
            }
            return Ok((final_path, None));
        };
        let blob = open_blob().map_err(io_err(&final_path))?;
        let report = self.extract_layer(&lock, diff_id, blob_digest, compression, blob)?;
        Ok((final_path, Some(report)))
    }

    /// Checks, once per file version, that the blob `open_blob` reads
    /// decompresses to layer `diff_id`; remembered under the file's
    /// identity (a changed file has another ctime, so another identity).
    fn prove_possession(
        &self,
        diff_id: &str,
        identity: &str,
        compression: Compression,
        open_blob: impl FnOnce() -> io::Result<Box<dyn Read>>,
    ) -> Result<(), StoreError> {
        let stamp = self.remembered(&format!("holds\0{identity}\0{diff_id}"));
        if stamp.exists() {
            return Ok(());
        }
        let blob = open_blob().map_err(io_err(&stamp))?;
        let decompressed = decompress(compression, blob).map_err(io_err(&stamp))?;
        let mut uncompressed = HashingReader::new(decompressed);
        io::copy(&mut uncompressed, &mut io::sink()).map_err(io_err(&stamp))?;
        check_digest(
            uncompressed.finish(),
            hex_of(diff_id)?,
            diff_id,
            "uncompressed",
        )?;
        let _ = fs::write(&stamp, b"");
        Ok(())
    }

    /// Checks that `blob` is blob `blob_digest` and decompresses to layer
    /// `diff_id`, extracting nothing: whoever handed it over holds the
    /// layer the store already has.
    pub fn verify_blob(
        &self,
        diff_id: &str,
        blob_digest: &str,
        compression: Compression,
        blob: Box<dyn Read>,
    ) -> Result<(), StoreError> {
        let read_err = |source| StoreError::Io {
            path: PathBuf::from(blob_digest),
            source,
        };
        let mut compressed = HashingReader::new(blob);
        {
            let decompressed = decompress(compression, &mut compressed).map_err(read_err)?;
            let mut uncompressed = HashingReader::new(decompressed);
            io::copy(&mut uncompressed, &mut io::sink()).map_err(read_err)?;
            check_digest(
                uncompressed.finish(),
                hex_of(diff_id)?,
                blob_digest,
                "uncompressed",
            )?;
        }
        io::copy(&mut compressed, &mut io::sink()).map_err(read_err)?;
        check_digest(
            compressed.finish(),
            hex_of(blob_digest)?,
            blob_digest,
            "compressed",
        )
    }

    /// A remembered fact's file under access/ (root's alone), by key.
    pub fn remembered(&self, key: &str) -> PathBuf {
        self.root
            .join("access")
            .join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// Extracts a layer blob under its lock: to tmp/, verified, renamed into place.
    pub fn extract_layer(
        &self,
        lock: &LayerLock,
        diff_id: &str,
        blob_digest: Option<&str>,
        compression: Compression,
        blob: Box<dyn Read>,
    ) -> Result<UnpackReport, StoreError> {
        let shown = blob_digest.unwrap_or(diff_id).to_string();
        let unpack_err = |source| StoreError::Unpack {
            digest: shown.clone(),
            source,
        };
        let options = UnpackOptions {
            privileged: self.privileged,
            allow_setuid: self.allow_setuid,
            max_depth: self.max_layer_depth,
            max_bytes: self.max_layer_bytes,
        };
        self.populate_layer(lock, diff_id, |tmp| {
            let mut compressed = HashingReader::new(blob);
            let report = {
                let decompressed = decompress(compression, &mut compressed)
                    .map_err(|e| unpack_err(UnpackError::Tar(e)))?;
                let mut uncompressed = HashingReader::new(decompressed);
                let report = unpack_layer(&mut uncompressed, tmp, options).map_err(unpack_err)?;
                io::copy(&mut uncompressed, &mut io::sink())
                    .map_err(|e| unpack_err(UnpackError::Tar(e)))?;
                check_digest(uncompressed.finish(), &lock.hex, &shown, "uncompressed")?;
                report
            };
            if let Some(digest) = blob_digest {
                io::copy(&mut compressed, &mut io::sink()).map_err(io_err(tmp))?;
                check_digest(compressed.finish(), hex_of(digest)?, digest, "compressed")?;
            }
            Ok(report)
        })
    }

    /// Fills a new layer directory with `fill` (given an empty temporary
    /// directory) and renames it into place when `fill` succeeds; on failure
    /// nothing is left. Records the layer's size.
    pub fn populate_layer<T>(
        &self,
        lock: &LayerLock,
        digest: &str,
        fill: impl FnOnce(&Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let hex = hex_of(digest)?;
        debug_assert_eq!(hex, lock.hex);
        let final_path = self.layer_path(digest)?;
        let tmp = self.tmp_dir().join(format!("{hex}.{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_err(&tmp))?;
        let result = fill(&tmp).and_then(|value| {
            // The layer root as the tar gave it, or 0755 (the store's root
            // keeps users out whatever the modes inside are).
            let root_mode = fs::metadata(&tmp)
                .map_err(io_err(&tmp))?
                .permissions()
                .mode()
                & 0o7777;
            if root_mode == 0o700 {
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                    .map_err(io_err(&tmp))?;
            }
            let meta = measure(&tmp);
            let meta_path = self.meta_path(hex);
            let meta_tmp = self
                .tmp_dir()
                .join(format!("{hex}.{}.meta", std::process::id()));
            fs::write(&meta_tmp, serde_json::to_vec(&meta).unwrap_or_default())
                .and_then(|_| fs::rename(&meta_tmp, &meta_path))
                .map_err(io_err(&meta_path))?;
            fs::rename(&tmp, &final_path).map_err(io_err(&final_path))?;
            tracing::debug!(layer = digest, bytes = meta.bytes, "layer extracted");
            Ok(value)
        });
        if result.is_err() {
            remove_tree(&tmp);
        }
        result
    }

    fn meta_path(&self, hex: &str) -> PathBuf {
        self.root.join("layers/meta").join(format!("{hex}.json"))
    }

    /// The recorded size of a layer (measured now when the record is missing).
    pub fn layer_meta(&self, digest: &str) -> LayerMeta {
        let Ok(hex) = hex_of(digest) else {
            return LayerMeta::default();
        };
        fs::read(self.meta_path(hex))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| {
                self.layer_path(digest)
                    .map(|p| measure(&p))
                    .unwrap_or_default()
            })
    }

    /// Every layer in the store, as `sha256:<hex>`.
    pub fn layers(&self) -> Vec<String> {
        let dir = self.root.join("layers/sha256");
        let mut out: Vec<String> = fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(|n| format!("sha256:{n}")))
                    .collect()
            })
            .unwrap_or_default();
        out.retain(|d| sha256_hex(d).is_some());
        out.sort();
        out
    }

    /// Opens (creating) a file under locks/ to flock.
    fn lock_file(&self, name: &str) -> Result<(PathBuf, File), StoreError> {
        let path = self.root.join("locks").join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok((path, file))
    }

    /// Whether a running container holds the layer (probed without waiting).
    pub fn layer_in_use(&self, digest: &str) -> bool {
        let Ok(hex) = hex_of(digest) else {
            return false;
        };
        self.lock_file(&format!("{hex}.use"))
            .map(|(_, file)| Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err())
            .unwrap_or(false)
    }

    /// Removes a layer unless a container uses it or it is being fetched:
    /// renamed out of place first, so no one ever sees half of it. Returns
    /// whether it was removed.
    pub fn remove_layer(&self, digest: &str) -> Result<bool, StoreError> {
        let hex = hex_of(digest)?;
        let try_exclusive = |name: String| -> Result<Option<Flock<File>>, StoreError> {
            let (_, file) = self.lock_file(&name)?;
            Ok(Flock::lock(file, FlockArg::LockExclusiveNonblock).ok())
        };
        let Some(_fetch) = try_exclusive(format!("{hex}.lock"))? else {
            return Ok(false);
        };
        let Some(_use) = try_exclusive(format!("{hex}.use"))? else {
            return Ok(false);
        };
        let path = self.layer_path(digest)?;
        let doomed = self
            .tmp_dir()
            .join(format!("{hex}.removing.{}", std::process::id()));
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
        let _ = fs::remove_file(self.meta_path(hex));
        remove_tree(&doomed);
        Ok(true)
    }

    /// The last time a container used the layer (or when it was extracted).
    pub fn layer_last_used(&self, digest: &str) -> i64 {
        let Ok(hex) = hex_of(digest) else { return 0 };
        let used = fs::metadata(self.root.join("locks").join(format!("{hex}.use")))
            .map(|m| m.mtime())
            .ok();
        let made = fs::metadata(self.meta_path(hex)).map(|m| m.mtime()).ok();
        used.or(made).unwrap_or(0)
    }

    /// Removes what killed processes left in tmp/: every entry is named
    /// `WHAT.PID...` by the process that made it, and one whose process is
    /// gone is nobody's (a pid reused since keeps its entry, which the
    /// layer's own sweep in [`Store::lock_layer`] removes later).
    pub fn remove_dead_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                remove_tree(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Removes work of layer `hex` that a killed process left in tmp/.
    /// Only called with the layer's lock held, so none of it is live.
    fn remove_stale_tmp(&self, hex: &str) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{hex}."))
            {
                let path = entry.path();
                if path.is_dir() {
                    remove_tree(&path);
                } else {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_kit;
#[cfg(test)]
mod tests;
