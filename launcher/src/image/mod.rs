//! Images: where they come from and how they become a stack of layer
//! directories in the node's store. Sources: registry references, OCI image
//! layouts, docker-archive tars, squashfs files, plain root filesystem
//! directories; each only has to produce a [`ResolvedImage`].

pub mod archive;
pub mod credentials;
pub mod gc;
pub mod layout;
pub mod oci;
pub mod records;
pub mod reference;
#[cfg(feature = "registry")]
pub mod registry;
pub mod squashfs;
pub mod store;
pub mod tar_guard;
pub mod unpack;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::as_user::{FileKind, UserRights};

pub use oci::RuntimeConfig;
pub use reference::ImageRef;
pub use store::{Store, StoreError};

/// An image error: names the image and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A path the user named that does not exist or that the user may not
    /// read: one answer for both (root's errors are no oracle).
    #[error("image {image:?} not found, or permission denied for uid {uid}")]
    NotAccessible {
        /// As the user named it.
        image: String,
        /// Whose rights it was opened with.
        uid: u32,
    },
    /// The image is malformed or cannot be fetched.
    #[error("image {image}: {message}")]
    Invalid {
        /// The image as the user named it.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// The name is neither a path nor a valid reference.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An image ready to run: layer directories and the runtime config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Their digests in the store (empty for a plain directory image).
    pub layer_digests: Vec<String>,
    /// Env, Cmd, Entrypoint, WorkingDir, User.
    pub config: RuntimeConfig,
    /// A stable id for logs: the config digest, or the directory path.
    pub id: String,
    /// A root filesystem directory image as a detached mount of exactly the
    /// directory the user's rights opened (root-run berth; rootless berth
    /// names it by its resolved path in `layers`, with the user's own rights).
    pub image_tree: Option<std::sync::Arc<OwnedFd>>,
}

/// A path a user named, opened once with their rights; from then on only
/// the descriptor is read, never the path again (a path checked and later
/// used is a race an attacker wins).
#[derive(Debug, Clone)]
pub struct OpenedPath {
    /// Where it is (absolute, as opened), for messages and records.
    pub path: PathBuf,
    /// The open file or directory.
    pub fd: std::sync::Arc<OwnedFd>,
    /// Whose rights opened it; files inside (a layout's blobs) are opened
    /// with them too. None: the caller's own.
    pub user: Option<UserRights>,
}

impl PartialEq for OpenedPath {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl OpenedPath {
    /// A reader of the opened file from offset 0, independent of any other.
    pub fn reader(&self) -> std::io::Result<FileAt> {
        Ok(FileAt {
            file: std::fs::File::from(self.fd.try_clone()?),
            pos: 0,
        })
    }
}

/// Reads a file through positioned reads (`pread`), so several readers of
/// one descriptor never disturb each other's offset.
pub struct FileAt {
    file: std::fs::File,
    pos: u64,
}

impl std::io::Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for FileAt {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let len = self.file.metadata()?.len();
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// Where an image comes from, as the user named it.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A directory that is the root filesystem itself.
    RootfsDir(OpenedPath),
    /// An OCI image layout directory.
    OciLayout(OpenedPath),
    /// A docker-archive tar.
    DockerArchive(OpenedPath),
    /// A squashfs file.
    Squashfs(OpenedPath),
    /// A name in the store (an import's `--name`) or a registry reference.
    Named(String),
}

/// Whether `name` is written as a path (else it may still be one, when a
/// file of that name exists).
/// Whether an image name is written as a path (`/…`, `./…`, `../…`), never
/// taken for a registry reference.
pub fn written_as_path(name: &str) -> bool {
    name.starts_with('/')
        || name.starts_with("./")
        || name.starts_with("../")
        || name == "."
        || name == ".."
}

/// Mount points strictly below `dir` in this mount namespace.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mountinfo(point)))
        .filter(|point| point != dir && point.starts_with(dir))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(text: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// What `ImageSource::resolve` asks of the registry side, for whoever runs
/// the image (their credentials, their progress display).
pub trait ImageRegistry {
    /// Fetches a registry reference that is not in the store yet.
    fn pull(&self, reference: &ImageRef) -> Result<records::ImageRecord, ImageError>;
    /// Whether the user may start this (private, cached) registry image:
    /// they must be able to pull it. Ok(false): the registry serves another
    /// image under that name now; it is pulled again.
    fn may_use(&self, record: &records::ImageRecord) -> Result<bool, ImageError>;
    /// Who pulls (`uid N`), as [`records::ImageRecord::pulled_by`] names them.
    fn puller(&self) -> String;
}

impl ImageSource {
    /// Works out what kind of image `name` is. A path is opened here, once,
    /// with the rights of `user` (root acting for a user; None: the caller's
    /// own), and only its descriptor is used afterwards. A FIFO, device or
    /// socket is refused without being read.
    pub fn parse(name: &str, user: Option<&UserRights>) -> Result<ImageSource, ImageError> {
        let opened = crate::as_user::open_user_path(
            user,
            Path::new(name),
            libc::O_RDONLY | libc::O_NONBLOCK,
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(_) if !written_as_path(name) => return Ok(ImageSource::Named(name.to_string())),
            Err(crate::as_user::UserPathError::NotAccessible { uid, .. }) => {
                return Err(ImageError::NotAccessible {
                    image: name.to_string(),
                    uid,
                })
            }
            Err(e) => {
                return Err(ImageError::Invalid {
                    image: name.to_string(),
                    message: e.to_string(),
                })
            }
        };
        let not_image = |what: &str| {
            ImageError::Invalid {
            image: name.to_string(),
            message: format!(
                "not an image: {what} (expected a directory, a docker-archive tar or a squashfs file)"
            ),
        }
        };
        let kind = crate::as_user::file_kind(fd.as_fd()).map_err(|e| not_image(&e.to_string()))?;
        // Named by where it really is (absolute): records of imported files
        // carry this name, and it must never look like a reference another
        // user could ask for ("ubuntu:22.04" as a file in someone's cwd).
        let path = crate::as_user::opened_at(fd.as_fd())
            .ok()
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from(name));
        let opened = OpenedPath {
            path,
            fd: std::sync::Arc::new(fd),
            user: user.cloned(),
        };
        match kind {
            FileKind::Dir if layout::is_layout(&opened) => Ok(ImageSource::OciLayout(opened)),
            FileKind::Dir => Ok(ImageSource::RootfsDir(opened)),
            FileKind::File => {
                use std::io::Read;
                let mut head = Vec::with_capacity(263);
                let reader = opened.reader().map_err(|e| not_image(&e.to_string()))?;
                let _ = reader.take(263).read_to_end(&mut head);
                if head.starts_with(squashfs::MAGIC) {
                    Ok(ImageSource::Squashfs(opened))
                } else if archive::is_tar(&head) {
                    Ok(ImageSource::DockerArchive(opened))
                } else {
                    Err(not_image("a file of another kind"))
                }
            }
            FileKind::Other(what) => Err(not_image(what)),
        }
    }

    /// The opened file or directory of a path source.
    pub fn opened(&self) -> Option<&OpenedPath> {
        match self {
            ImageSource::RootfsDir(p)
            | ImageSource::OciLayout(p)
            | ImageSource::DockerArchive(p)
            | ImageSource::Squashfs(p) => Some(p),
            ImageSource::Named(_) => None,
        }
    }

    /// The store name a named source stands for: the import name as given, or
    /// the canonical form of a registry reference.
    pub fn record_names(name: &str) -> Vec<String> {
        let mut names = vec![name.to_string()];
        if let Ok(r) = ImageRef::parse(name) {
            names.push(r.to_string());
        }
        names
    }

    /// Brings the image into the store when needed and returns it ready to
    /// run: `registry` fetches a registry reference that is not in the
    /// store yet, and is asked before a private registry image is started
    /// from the store.
    pub fn resolve(
        &self,
        store: &Store,
        allow_setuid: bool,
        registry: &dyn ImageRegistry,
    ) -> Result<ResolvedImage, ImageError> {
        let from_record = |record: records::ImageRecord, shown: &str| {
            record.resolve(store).ok_or_else(|| ImageError::Invalid {
                image: shown.to_string(),
                message: "some of its layers were removed from the store; pull or import it again"
                    .into(),
            })
        };
        match self {
            ImageSource::RootfsDir(dir) => {
                let failed = |e: std::io::Error| ImageError::Invalid {
                    image: dir.path.display().to_string(),
                    message: e.to_string(),
                };
                let (layers, image_tree) = if store.privileged() {
                    // Only the directory's own filesystem is the image: what a
                    // mount below it hides would show (root's clone, unlike
                    // the user's own, is not refused for that by the kernel).
                    if let Some(below) = mounts_below(&dir.path).first() {
                        return Err(ImageError::Invalid {
                            image: dir.path.display().to_string(),
                            message: format!(
                                "{} is mounted inside it; a root filesystem directory image may hold no mount",
                                below.display()
                            ),
                        });
                    }
                    let tree =
                        crate::sys::open_tree_clone_fd(dir.fd.as_fd(), false).map_err(failed)?;
                    (vec![], Some(std::sync::Arc::new(tree)))
                } else {
                    (vec![dir.path.clone()], None) // the user's own rights: by path
                };
                Ok(ResolvedImage {
                    layers,
                    layer_digests: vec![],
                    config: RuntimeConfig::default(),
                    id: dir.path.display().to_string(),
                    image_tree,
                })
            }
            ImageSource::OciLayout(dir) => layout::Layout::new(dir).resolve(store),
            ImageSource::DockerArchive(file) => {
                let name = file.path.display().to_string();
                from_record(archive::import(store, file, Some(&name))?, &name)
            }
            ImageSource::Squashfs(file) => {
                let name = file.path.display().to_string();
                from_record(
                    squashfs::import(store, file, Some(&name), allow_setuid)?,
                    &name,
                )
            }
            ImageSource::Named(name) => {
                for candidate in Self::record_names(name) {
                    if let Some(record) = records::load(store, &candidate) {
                        if let Some(image) = record.resolve(store) {
                            // Another user's image from a registry anyone
                            // may run: this user pulls their own.
                            if record
                                .pulled_by
                                .as_ref()
                                .is_some_and(|by| *by != registry.puller())
                            {
                                break;
                            }
                            if !record.needs_access_check() || registry.may_use(&record)? {
                                return Ok(image);
                            }
                            break;
                        }
                    }
                }
                let reference = ImageRef::parse(name)?;
                from_record(registry.pull(&reference)?, name)
            }
        }
    }
}
