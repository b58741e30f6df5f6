//! Named containers that outlive their job (the plugin's
//! `container_scope=global`, pyxis's default): one per user and name on a
//! node, kept under the store (root's alone):
//!
//! ```text
//! <store>/containers/<uid>/<name>/
//!     container.json   what it is: the image (its layers and config), when made and last used
//!     layer.ext4       its writable layer: an ext4 filesystem in a sparse file of
//!                      [store] container_max_size, mounted through a loop device
//!     lock             flock: one helper at a time changes it
//!     keeper.json      the running container's keeper (its "base"), if one runs
//!     users/JOB.STEP.json  each step using it: that step's view keeper
//! ```
//!
//! At most one base keeper runs per container, so its writable layer is
//! mounted once: every step (of any job) gets its own view into it, and the
//! last one to leave ends the base. A new base is never started while a
//! loop device still backs the layer (some mount of it is still alive).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::record::KeeperRecord;
use crate::image::records::ImageRecord;
use crate::image::Store;

mod summary;
#[cfg(test)]
pub(crate) mod test_kit;

pub use summary::summary_path;

/// Why a named container could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NamedError {
    /// The name cannot be a container's.
    #[error(
        "container name {0:?}: use at most 128 letters, digits, '_', '.' and '-' (not . or ..)"
    )]
    BadName(String),
    /// A file of it could not be read or written.
    #[error("named container {name:?}: cannot {what} {}: {source}", path.display())]
    Io {
        /// Which container.
        name: String,
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Its writable layer could not be made.
    #[error("named container {name:?}: cannot make its writable layer: {message}")]
    Layer {
        /// Which container.
        name: String,
        /// What mkfs said.
        message: String,
    },
    /// The disk holding the store is (nearly) full.
    #[error("named container {name:?}: the node's disk holding {} is full ({free} bytes free): free space there, or ask the cluster admins", path.display())]
    DiskFull {
        /// Which container.
        name: String,
        /// Where.
        path: PathBuf,
        /// Bytes free.
        free: u64,
    },
    /// It is in use, so it cannot be removed or replaced.
    #[error("named container {name:?} is in use ({by}): {what}")]
    InUse {
        /// Which container.
        name: String,
        /// By what.
        by: String,
        /// What cannot be done.
        what: &'static str,
    },
}

/// What a named container is (`container.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    /// Its name.
    pub name: String,
    /// Its user.
    pub uid: u32,
    /// The image it was made from, as the store had it then: the same
    /// layers under its writable layer every time it starts.
    pub image: ImageRecord,
    /// Seconds since the epoch when it was made.
    pub created: u64,
    /// Seconds since the epoch when a step last started in it.
    pub last_used: u64,
    /// The job that last used it.
    pub last_job: Option<u32>,
    /// The size of its writable layer's filesystem, in bytes.
    pub size_limit: u64,
    /// It has a network namespace of its own (`--container-unshare=net`
    /// when it was made): it keeps it every time it starts, as in pyxis.
    #[serde(default)]
    pub own_network: bool,
}

/// One line of `berth ps`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Listed {
    /// Its record.
    #[serde(flatten)]
    pub record: ContainerRecord,
    /// Bytes its writable layer takes on disk.
    pub disk_bytes: u64,
    /// A keeper of it runs.
    pub running: bool,
    /// The steps using it now (`JOB.STEP`).
    pub steps: Vec<String>,
}

/// The node's named containers, under the store.
pub struct NamedContainers {
    root: PathBuf,
}

/// Whether `name` can be a container's directory name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn make_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl NamedContainers {
    /// The named containers of `store`.
    pub fn of(store: &Store) -> NamedContainers {
        // The resolved path: the kernel names a loop device's backing file
        // by it (`still_mounted`), whatever links the configured path has.
        let root = fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
        NamedContainers {
            root: root.join("containers"),
        }
    }

    /// Whether `uid` has a container `name` (made, not removed). Looks
    /// without its lock and makes nothing.
    pub fn exists(&self, uid: u32, name: &str) -> bool {
        valid_name(name) && read_record(&self.root.join(uid.to_string()).join(name)).is_some()
    }

    /// The users (uids) who have a directory of named containers here.
    pub fn uids(&self) -> Vec<u32> {
        let mut uids: Vec<u32> = read_dir_paths(&self.root)
            .iter()
            .filter_map(|d| d.file_name()?.to_str()?.parse().ok())
            .collect();
        uids.sort_unstable();
        uids
    }

    /// Takes the lock of `uid`'s container `name` (waiting for whoever
    /// holds it), making its directory when missing.
    pub fn lock(&self, uid: u32, name: &str) -> Result<NamedContainer, NamedError> {
        self.lock_as(uid, name, FlockArg::LockExclusive)
            .map(|held| held.expect("a blocking lock is taken"))
    }

    /// Takes the lock of `uid`'s container `name` if no one holds it.
    pub fn try_lock(&self, uid: u32, name: &str) -> Result<Option<NamedContainer>, NamedError> {
        self.lock_as(uid, name, FlockArg::LockExclusiveNonblock)
    }

    fn lock_as(
        &self,
        uid: u32,
        name: &str,
        how: FlockArg,
    ) -> Result<Option<NamedContainer>, NamedError> {
        if !valid_name(name) {
            return Err(NamedError::BadName(name.to_string()));
        }
        let dir = self.root.join(uid.to_string()).join(name);
        let io_error = |what, path: &Path| {
            let (name, path) = (name.to_string(), path.to_path_buf());
            move |source| NamedError::Io {
                name,
                what,
                path,
                source,
            }
        };
        make_private_dir(&dir.join("users")).map_err(io_error("create", &dir))?;
        let lock_path = dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        let lock = match Flock::lock(file, how) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(io_error("lock", &lock_path)(e.into())),
        };
        Ok(Some(NamedContainer {
            uid,
            name: name.to_string(),
            dir,
            _lock: lock,
        }))
    }

    /// The containers of `uid` (all users' with None), with whether they
    /// run and what they take on disk. Read without their locks.
    pub fn list(&self, uid: Option<u32>) -> Vec<Listed> {
        let uids: Vec<PathBuf> = match uid {
            Some(uid) => vec![self.root.join(uid.to_string())],
            None => read_dir_paths(&self.root),
        };
        let mut listed: Vec<Listed> = uids
            .iter()
            .flat_map(|d| read_dir_paths(d))
            .filter_map(|dir| {
                let record = read_record(&dir)?;
                let steps = live_users(&dir).into_iter().map(|(step, _)| step).collect();
                Some(Listed {
                    disk_bytes: fs::metadata(dir.join("layer.ext4"))
                        .map(|m| m.blocks() * 512)
                        .unwrap_or(0),
                    running: KeeperRecord::read(&dir.join("keeper.json"))
                        .is_some_and(|k| k.is_alive()),
                    steps,
                    record,
                })
            })
            .collect();
        listed.sort_by(|a, b| (a.record.uid, &a.record.name).cmp(&(b.record.uid, &b.record.name)));
        listed
    }

    /// Every container's image layers (`berth gc` keeps them).
    pub fn layers_kept(&self) -> std::collections::BTreeSet<String> {
        self.list(None)
            .into_iter()
            .flat_map(|l| l.record.image.layers)
            .collect()
    }
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn read_record(dir: &Path) -> Option<ContainerRecord> {
    serde_json::from_slice(&fs::read(dir.join("container.json")).ok()?).ok()
}

/// The steps using the container in `dir` whose view keepers still run.
fn live_users(dir: &Path) -> Vec<(String, KeeperRecord)> {
    read_dir_paths(&dir.join("users"))
        .into_iter()
        .filter_map(|path| {
            // `JOB.STEP.json` (not a half-written `.json.tmp`).
            let step = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .to_string();
            let record = KeeperRecord::read(&path).filter(KeeperRecord::is_alive)?;
            Some((step, record))
        })
        .collect()
}

/// One named container, locked: only its holder changes it.
pub struct NamedContainer {
    /// Its user.
    pub uid: u32,
    /// Its name.
    pub name: String,
    dir: PathBuf,
    _lock: Flock<File>,
}

impl NamedContainer {
    fn io_error(&self, what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NamedError {
        let (name, path) = (self.name.clone(), path.to_path_buf());
        move |source| NamedError::Io {
            name,
            what,
            path,
            source,
        }
    }

    /// The descriptor of its lock (which a keeper spawned under it closes).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._lock.as_raw_fd()
    }

    /// What it is, if it was made (and not removed).
    pub fn record(&self) -> Option<ContainerRecord> {
        read_record(&self.dir)
    }

    /// Its writable layer's filesystem image.
    pub fn layer_file(&self) -> PathBuf {
        self.dir.join("layer.ext4")
    }

    /// Makes it: a fresh writable layer of `size_limit` bytes, then its
    /// record (it exists from then on; a failure before leaves nothing).
    pub fn create(
        &self,
        image: ImageRecord,
        size_limit: u64,
        job: Option<u32>,
        own_network: bool,
    ) -> Result<ContainerRecord, NamedError> {
        let layer = self.layer_file();
        let tmp = self.dir.join("layer.ext4.tmp");
        let _ = fs::remove_file(&tmp);
        let made = make_ext4(&tmp, size_limit).map_err(|message| NamedError::Layer {
            name: self.name.clone(),
            message,
        });
        if let Err(e) = made {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &layer).map_err(self.io_error("rename", &tmp))?;
        let now = crate::image::records::now();
        let record = ContainerRecord {
            name: self.name.clone(),
            uid: self.uid,
            image,
            created: now,
            last_used: now,
            last_job: job,
            size_limit,
            own_network,
        };
        self.write_record(&record)?;
        Ok(record)
    }

    fn write_record(&self, record: &ContainerRecord) -> Result<(), NamedError> {
        let path = self.dir.join("container.json");
        let tmp = self.dir.join("container.json.tmp");
        let text = serde_json::to_vec_pretty(record).unwrap_or_default();
        fs::write(&tmp, text).map_err(self.io_error("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(self.io_error("rename", &tmp))
    }

    /// Notes a step starting in it.
    pub fn touch(&self, job: Option<u32>) -> Result<(), NamedError> {
        match self.record() {
            Some(mut record) => {
                record.last_used = crate::image::records::now();
                record.last_job = job.or(record.last_job);
                self.write_record(&record)
            }
            None => Ok(()),
        }
    }

    /// Its running base keeper.
    pub fn base(&self) -> Option<KeeperRecord> {
        KeeperRecord::read(&self.dir.join("keeper.json")).filter(KeeperRecord::is_alive)
    }

    /// Records its base keeper.
    pub fn set_base(&self, record: &KeeperRecord) -> Result<(), NamedError> {
        let path = self.dir.join("keeper.json");
        record.write(&path).map_err(self.io_error("write", &path))
    }

    /// The steps using it now, with their view keepers; the records of
    /// steps gone are removed.
    pub fn users(&self) -> Vec<(String, KeeperRecord)> {
        let live = live_users(&self.dir);
        for path in read_dir_paths(&self.dir.join("users")) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let step = name.as_deref().and_then(|n| n.strip_suffix(".json"));
            if !live.iter().any(|(live, _)| Some(live.as_str()) == step) {
                let _ = fs::remove_file(&path);
            }
        }
        live
    }

    /// Records step `job.step` as using it through `view`.
    pub fn add_user(&self, job: u32, step: u32, view: &KeeperRecord) -> Result<(), NamedError> {
        self.add_process(&format!("{job}.{step}"), view)
    }

    /// Records the process `record` (a step's view keeper, a login
    /// session) as using it, as `user`: it is in use while that process
    /// lives.
    pub fn add_process(&self, user: &str, record: &KeeperRecord) -> Result<(), NamedError> {
        let path = self.dir.join("users").join(format!("{user}.json"));
        record.write(&path).map_err(self.io_error("write", &path))
    }

    /// Forgets `user` (see `add_process`).
    pub fn remove_process(&self, user: &str) {
        let _ = fs::remove_file(self.dir.join("users").join(format!("{user}.json")));
    }

    /// Whether some mount of its writable layer is still alive somewhere
    /// (a loop device backs the file): no new base may mount it then.
    pub fn still_mounted(&self) -> bool {
        !crate::sys::loop_devices_backing(&self.layer_file()).is_empty()
    }

    /// Readies the writable layer for a new base: refused while the disk
    /// holding the store is (nearly) full, so that a step fails with a
    /// clear message instead of its writes failing half way; a layer whose
    /// filesystem recorded an error (a write the full disk refused) is
    /// repaired with `e2fsck -p` first.
    pub fn prepare_layer(&self) -> Result<(), NamedError> {
        let layer = self.layer_file();
        let meta = fs::metadata(&layer).map_err(self.io_error("open", &layer))?;
        let may_grow = meta.len().saturating_sub(meta.blocks() * 512);
        let stat = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| self.io_error("read the free space of", &self.dir)(e.into()))?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        if free < may_grow.min(LEAST_ROOM) {
            return Err(NamedError::DiskFull {
                name: self.name.clone(),
                path: self.dir.clone(),
                free,
            });
        }
        if filesystem_has_errors(&layer) {
            tracing::warn!(name = %self.name, "the writable layer recorded an error: repairing it");
            let out = std::process::Command::new("e2fsck")
                .args(["-p", "-f"])
                .arg(&layer)
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .map_err(|e| NamedError::Layer {
                    name: self.name.clone(),
                    message: format!("cannot run e2fsck (install e2fsprogs): {e}"),
                })?;
            // 0: clean, 1: errors corrected; more: it could not.
            if out.status.code().is_none_or(|c| c > 1) {
                return Err(NamedError::Layer {
                    name: self.name.clone(),
                    message: format!(
                        "its filesystem has errors e2fsck -p cannot repair ({}); ask the admins to run e2fsck on {}",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        layer.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Ends its base keeper when no step uses it any more: the record of
    /// the base ended, if it was.
    pub fn end_if_unused(&self) -> Option<super::record::Ended> {
        if !self.users().is_empty() {
            return None;
        }
        let base = KeeperRecord::read(&self.dir.join("keeper.json"))?;
        let ended = base.end();
        let _ = fs::remove_file(self.dir.join("keeper.json"));
        Some(ended)
    }

    /// Stops it now, whoever uses it (`berth stop`, as root): every
    /// process using it (a step's view keeper, a login session) is killed,
    /// then its base keeper, with every process left in the container. The
    /// base's record and what ending it found, if one ran.
    pub fn stop(&self) -> Option<(KeeperRecord, super::record::Ended)> {
        for (user, record) in self.users() {
            record.end();
            self.remove_process(&user);
        }
        let base = self.base();
        let ended = self.end_if_unused()?;
        Some((base?, ended))
    }

    /// Removes it (`berth rm`, `berth gc`): refused while it is in use.
    pub fn remove(self) -> Result<(), NamedError> {
        let in_use = |by: String| NamedError::InUse {
            name: self.name.clone(),
            by,
            what: "stop its steps first",
        };
        if let Some((step, _)) = self.users().first() {
            return Err(in_use(format!("step {step}")));
        }
        if self.base().is_some() || self.still_mounted() {
            return Err(in_use("its keeper is still running".into()));
        }
        // The record first: from then on the container does not exist,
        // even if removing its layer fails half way.
        let record = self.dir.join("container.json");
        match fs::remove_file(&record) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(self.io_error("remove", &record)(e))
            }
            _ => {}
        }
        fs::remove_dir_all(&self.dir).map_err(self.io_error("remove", &self.dir))
    }
}

/// A base is not started with less free space than this on the store's
/// disk (or than its layer may still grow by, if less).
const LEAST_ROOM: u64 = 64 << 20;

/// Whether the ext4 filesystem in `image` recorded an error (its
/// superblock's `s_state` has `EXT4_ERROR_FS`).
fn filesystem_has_errors(image: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    const SUPERBLOCK: u64 = 1024;
    const S_STATE: u64 = 0x3A;
    const EXT4_ERROR_FS: u16 = 0x0002;
    let mut state = [0u8; 2];
    File::open(image)
        .and_then(|f| f.read_exact_at(&mut state, SUPERBLOCK + S_STATE))
        .is_ok_and(|()| u16::from_le_bytes(state) & EXT4_ERROR_FS != 0)
}

/// Makes an ext4 filesystem of `bytes` in a new sparse file `path`,
/// owned by root, with no blocks reserved for root and no discard.
fn make_ext4(path: &Path, bytes: u64) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(bytes)
        .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    drop(file);
    let out = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "root_owner=0:0,nodiscard,lazy_itable_init=1",
        ])
        .arg(path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|e| format!("cannot run mkfs.ext4 (install e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_layer_is_a_clean_root_owned_private_ext4_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.ext4");
        make_ext4(&path, 16 << 20).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 16 << 20);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(meta.blocks() * 512 < 16 << 20, "sparse");
        assert!(!filesystem_has_errors(&path));
        // A recorded error shows.
        use std::os::unix::fs::FileExt;
        let file = File::options().write(true).open(&path).unwrap();
        file.write_all_at(&2u16.to_le_bytes(), 1024 + 0x3A).unwrap();
        assert!(filesystem_has_errors(&path));
        assert!(
            make_ext4(&path, 16 << 20).is_err(),
            "never over an existing file"
        );
    }

    #[test]
    fn names_never_leave_their_directory() {
        for good in ["dev", "a.b-c_1", "...x"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
