//! Images: where they come from and how they become a stack of layer
//! directories in the store. Sources today: a plain root filesystem directory
//! and an OCI image layout; each source only has to produce a [`ResolvedImage`].

pub mod layout;
pub mod oci;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use oci::RuntimeConfig;
pub use store::{Store, StoreError};

/// An image error: names the image and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Nothing at the given path.
    #[error(
        "image {0:?} not found (give a root filesystem directory or an OCI image layout directory)"
    )]
    NotFound(String),
    /// The image is malformed.
    #[error("image {image}: {message}")]
    Invalid {
        /// The image as the user named it.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An image ready to run: layer directories and the runtime config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Layer directories, bottom first.
    pub layers: Vec<PathBuf>,
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
}

impl ImageSource {
    /// Works out what kind of image `name` is.
    pub fn parse(name: &str) -> Result<ImageSource, ImageError> {
        let path = Path::new(name);
        if !path.exists() {
            return Err(ImageError::NotFound(name.to_string()));
        }
        let path = path
            .canonicalize()
            .map_err(|_| ImageError::NotFound(name.to_string()))?;
        if !path.is_dir() {
            return Err(ImageError::Invalid {
                image: name.to_string(),
                message: "not a directory (registry references and archives are not supported yet)"
                    .into(),
            });
        }
        if layout::is_layout(&path) {
            Ok(ImageSource::OciLayout(path))
        } else {
            Ok(ImageSource::RootfsDir(path))
        }
    }

    /// Brings the image into the store (when it has layers) and returns it ready to run.
    pub fn resolve(&self, store: &Store) -> Result<ResolvedImage, ImageError> {
        match self {
            ImageSource::RootfsDir(dir) => Ok(ResolvedImage {
                layers: vec![dir.clone()],
                config: RuntimeConfig::default(),
                id: dir.display().to_string(),
            }),
            ImageSource::OciLayout(dir) => layout::Layout::new(dir).resolve(store),
        }
    }
}
