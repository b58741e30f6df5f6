//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/`).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::as_user::FileKind;
use crate::sys;

use sha2::{Digest, Sha256};

use super::oci::{self, Compression, Descriptor, ImageConfigFile, Index, Manifest};
use super::store::{file_version, Store};
use super::{ImageError, OpenedPath, ResolvedImage};

/// True when the opened directory looks like an OCI image layout.
pub fn is_layout(dir: &OpenedPath) -> bool {
    let is_file = |name: &str| {
        open_beneath(dir, name)
            .and_then(|fd| crate::as_user::file_kind(fd.as_fd()))
            .is_ok_and(|k| k == FileKind::File)
    };
    is_file("index.json") && is_file("oci-layout")
}

/// Opens `name` inside the layout directory with the rights it was opened
/// with: never above it, through no symlink and no magic link, and without
/// blocking on a FIFO.
fn open_beneath(dir: &OpenedPath, name: &str) -> std::io::Result<OwnedFd> {
    let open = || {
        sys::openat2(
            Some(dir.fd.as_fd()),
            Path::new(name),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
        )
    };
    crate::as_user::with_rights(dir.user.as_ref(), open)?
}

/// An OCI layout on disk.
pub struct Layout<'a> {
    dir: &'a OpenedPath,
}

impl<'a> Layout<'a> {
    /// Wraps the opened layout directory.
    pub fn new(dir: &'a OpenedPath) -> Layout<'a> {
        Layout { dir }
    }

    /// Opens a file of the layout: a regular file, or an error naming it.
    fn open_file(&self, name: &str) -> Result<File, ImageError> {
        let fd = open_beneath(self.dir, name).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => self.bad(format!(
                "{name} is a symlink or leads out of the layout; blobs must be regular files inside it"
            )),
            _ => self.bad(format!("cannot read {name}: {e}")),
        })?;
        match crate::as_user::file_kind(fd.as_fd()) {
            Ok(FileKind::File) => Ok(File::from(fd)),
            Ok(_) => Err(self.bad(format!("{name} is not a regular file"))),
            Err(e) => Err(self.bad(format!("cannot read {name}: {e}"))),
        }
    }

    fn blob_name(&self, digest: &str) -> Result<String, ImageError> {
        let hex = oci::sha256_hex(digest)
            .ok_or_else(|| self.bad(format!("malformed digest {digest:?}")))?;
        Ok(format!("blobs/sha256/{hex}"))
    }

    fn bad(&self, message: String) -> ImageError {
        ImageError::Invalid {
            image: self.dir.path.display().to_string(),
            message,
        }
    }

    /// Reads a small JSON blob, checking its digest.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
    ) -> Result<T, ImageError> {
        let file = self.open_file(&self.blob_name(&desc.digest)?)?;
        let bytes = oci::read_json_limited(file)
            .map_err(|e| self.bad(format!("blob {}: {e}", desc.digest)))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if Some(actual.as_str()) != oci::sha256_hex(&desc.digest) {
            return Err(self.bad(format!(
                "blob {} is corrupt: its content does not match its digest",
                desc.digest
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.bad(format!("blob {} is not valid JSON: {e}", desc.digest)))
    }

    /// Picks the manifest for this machine from an index, following nested
    /// indexes (a few levels at most: a chain of thousands would exhaust
    /// the stack).
    fn select_manifest(&self, index: &Index, depth: usize) -> Result<Manifest, ImageError> {
        const MAX_NESTED_INDEXES: usize = 8;
        if depth > MAX_NESTED_INDEXES {
            return Err(self.bad(format!(
                "more than {MAX_NESTED_INDEXES} nested indexes: refused"
            )));
        }
        let arch = oci::host_architecture();
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os == "linux" && p.architecture == arch)
            })
            .collect();
        let desc = match candidates.as_slice() {
            [one] => *one,
            [] => return Err(self.bad(format!("no image for linux/{arch} in the index"))),
            many => many
                .iter()
                .copied()
                .find(|d| d.platform.is_some())
                .unwrap_or(many[0]),
        };
        if oci::INDEX_TYPES.contains(&desc.media_type.as_str()) {
            let nested: Index = self.read_json(desc)?;
            return self.select_manifest(&nested, depth + 1);
        }
        if !oci::MANIFEST_TYPES.contains(&desc.media_type.as_str()) {
            return Err(self.bad(format!(
                "unsupported manifest media type {:?}",
                desc.media_type
            )));
        }
        self.read_json(desc)
    }

    /// Puts every layer into the store and returns the runnable image.
    pub fn resolve(&self, store: &Store) -> Result<ResolvedImage, ImageError> {
        let text = oci::read_json_limited(self.open_file("index.json")?)
            .map_err(|e| self.bad(format!("index.json: {e}")))?;
        let index: Index =
            serde_json::from_slice(&text).map_err(|e| self.bad(format!("index.json: {e}")))?;
        let manifest = self.select_manifest(&index, 0)?;
        let config: ImageConfigFile = self.read_json(&manifest.config)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(self.bad(format!(
                "manifest lists {} layers but the config has {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let compression = Compression::of_media_type(&desc.media_type).ok_or_else(|| {
                self.bad(format!(
                    "layer {} has unsupported media type {:?}",
                    desc.digest, desc.media_type
                ))
            })?;
            let blob = self.blob_name(&desc.digest)?;
            // A user's layout must hold the layer it names (checked once per
            // blob file version); otherwise the blob is opened only when the
            // layer is missing, and hashed while extracted.
            let (user_blob, identity) = match &self.dir.user {
                Some(user) => {
                    let file = self.open_file(&blob)?;
                    let identity = file_version(file.as_fd(), Some(user))
                        .map_err(|e| self.bad(e.to_string()))?;
                    (Some(file), Some(identity))
                }
                None => (None, None),
            };
            let (path, _) = store.ensure_layer(
                diff_id,
                Some(&desc.digest),
                compression,
                identity.as_deref(),
                || {
                    let file = match user_blob {
                        Some(file) => file,
                        None => self.open_file(&blob).map_err(std::io::Error::other)?,
                    };
                    Ok(Box::new(file) as Box<dyn std::io::Read>)
                },
            )?;
            layers.push(path);
        }
        Ok(ResolvedImage {
            layers,
            layer_digests: config.rootfs.diff_ids.clone(),
            config: config.config.unwrap_or_default(),
            id: manifest.config.digest.clone(),
            image_tree: None,
        })
    }

    /// Imports the layout into the store and records it as `name`.
    pub fn import(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<super::records::ImageRecord, ImageError> {
        let image = self.resolve(store)?;
        let record = super::records::ImageRecord {
            name: name.to_string(),
            source: "oci-layout".into(),
            id: image.id,
            manifest_digest: None,
            layers: image.layer_digests,
            config: image.config,
            created: super::records::now(),
            public: false,
            pulled_by: None,
        };
        super::records::save(store, &record)?;
        Ok(record)
    }
}
