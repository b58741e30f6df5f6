//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::oci::{self, Compression, Descriptor, ImageConfigFile, Index, Manifest};
use super::store::Store;
use super::{ImageError, ResolvedImage};

/// True when `dir` looks like an OCI image layout.
pub fn is_layout(dir: &Path) -> bool {
    dir.join("index.json").is_file() && dir.join("oci-layout").is_file()
}

/// An OCI layout on disk.
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Wraps the layout at `dir`.
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = oci::sha256_hex(digest)
            .ok_or_else(|| self.bad(format!("malformed digest {digest:?}")))?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    fn bad(&self, message: String) -> ImageError {
        ImageError::Invalid {
            image: self.dir.display().to_string(),
            message,
        }
    }

    /// Reads a small JSON blob, checking its digest.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
    ) -> Result<T, ImageError> {
        let path = self.blob_path(&desc.digest)?;
        let bytes = fs::read(&path)
            .map_err(|e| self.bad(format!("cannot read blob {}: {e}", desc.digest)))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if Some(actual.as_str()) != oci::sha256_hex(&desc.digest) {
            return Err(self.bad(format!(
                "blob {} is corrupt: its content hashes to sha256:{actual}",
                desc.digest
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.bad(format!("blob {} is not valid JSON: {e}", desc.digest)))
    }

    /// Picks the manifest for this machine from an index, following nested indexes.
    fn select_manifest(&self, index: &Index) -> Result<Manifest, ImageError> {
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
            return self.select_manifest(&nested);
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
        let text = fs::read(self.dir.join("index.json"))
            .map_err(|e| self.bad(format!("cannot read index.json: {e}")))?;
        let index: Index =
            serde_json::from_slice(&text).map_err(|e| self.bad(format!("index.json: {e}")))?;
        let manifest = self.select_manifest(&index)?;
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
            let blob = self.blob_path(&desc.digest)?;
            let (path, _) = store.ensure_layer(diff_id, Some(&desc.digest), compression, || {
                File::open(&blob).map(|f| Box::new(f) as Box<dyn std::io::Read>)
            })?;
            layers.push(path);
        }
        Ok(ResolvedImage {
            layers,
            layer_digests: config.rootfs.diff_ids.clone(),
            config: config.config.unwrap_or_default(),
            id: manifest.config.digest.clone(),
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
        };
        super::records::save(store, &record)?;
        Ok(record)
    }
}
