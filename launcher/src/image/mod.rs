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
pub mod unpack;

use std::path::{Path, PathBuf};

pub use oci::RuntimeConfig;
pub use reference::ImageRef;
pub use store::{Store, StoreError};

/// An image error: names the image and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Nothing at the given path.
    #[error("image {0:?} not found (give a registry reference, an OCI layout, a docker-archive, a squashfs file or a root filesystem directory)")]
    NotFound(String),
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
}

/// Where an image comes from, as the user named it.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A directory that is the root filesystem itself.
    RootfsDir(PathBuf),
    /// An OCI image layout directory.
    OciLayout(PathBuf),
    /// A docker-archive tar.
    DockerArchive(PathBuf),
    /// A squashfs file.
    Squashfs(PathBuf),
    /// A name in the store (an import's `--name`) or a registry reference.
    Named(String),
}

/// Whether `name` is meant as a path rather than a name or reference.
fn looks_like_path(name: &str) -> bool {
    name.starts_with('/')
        || name.starts_with("./")
        || name.starts_with("../")
        || name == "."
        || Path::new(name).exists()
}

impl ImageSource {
    /// Works out what kind of image `name` is.
    pub fn parse(name: &str) -> Result<ImageSource, ImageError> {
        if !looks_like_path(name) {
            return Ok(ImageSource::Named(name.to_string()));
        }
        let path = Path::new(name)
            .canonicalize()
            .map_err(|_| ImageError::NotFound(name.to_string()))?;
        if path.is_dir() {
            return Ok(if layout::is_layout(&path) {
                ImageSource::OciLayout(path)
            } else {
                ImageSource::RootfsDir(path)
            });
        }
        if squashfs::is_squashfs(&path) {
            Ok(ImageSource::Squashfs(path))
        } else if archive::is_tar(&path) {
            Ok(ImageSource::DockerArchive(path))
        } else {
            Err(ImageError::Invalid {
                image: name.to_string(),
                message:
                    "not an image: expected a directory, a docker-archive tar or a squashfs file"
                        .into(),
            })
        }
    }

    /// The file or directory of a path source.
    pub fn path(&self) -> Option<&Path> {
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
    /// run. `pull` fetches a registry reference that is not in the store yet.
    pub fn resolve(
        &self,
        store: &Store,
        allow_setuid: bool,
        pull: &dyn Fn(&ImageRef) -> Result<records::ImageRecord, ImageError>,
    ) -> Result<ResolvedImage, ImageError> {
        let from_record = |record: records::ImageRecord, shown: &str| {
            record.resolve(store).ok_or_else(|| ImageError::Invalid {
                image: shown.to_string(),
                message: "some of its layers were removed from the store; pull or import it again"
                    .into(),
            })
        };
        match self {
            ImageSource::RootfsDir(dir) => Ok(ResolvedImage {
                layers: vec![dir.clone()],
                layer_digests: vec![],
                config: RuntimeConfig::default(),
                id: dir.display().to_string(),
            }),
            ImageSource::OciLayout(dir) => layout::Layout::new(dir).resolve(store),
            ImageSource::DockerArchive(file) => {
                let name = file.display().to_string();
                from_record(archive::import(store, file, Some(&name))?, &name)
            }
            ImageSource::Squashfs(file) => {
                let name = file.display().to_string();
                from_record(
                    squashfs::import(store, file, Some(&name), allow_setuid)?,
                    &name,
                )
            }
            ImageSource::Named(name) => {
                for candidate in Self::record_names(name) {
                    if let Some(record) = records::load(store, &candidate) {
                        if let Some(image) = record.resolve(store) {
                            return Ok(image);
                        }
                    }
                }
                let reference = ImageRef::parse(name)?;
                from_record(pull(&reference)?, name)
            }
        }
    }
}
