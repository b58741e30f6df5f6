//! Image records: which layers (and runtime config) a name stands for.
//! One small JSON file per name under `<store>/images/`, written atomically.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::oci::RuntimeConfig;
use super::store::{Store, StoreError};
use super::ResolvedImage;

/// What a name in the store stands for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The canonical name: a registry reference, or the name given at import.
    pub name: String,
    /// Where it came from: `registry`, `oci-layout`, `docker-archive`, `squashfs`.
    pub source: String,
    /// The image id: the config digest (or the squashfs file digest).
    pub id: String,
    /// The manifest digest, for registry images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Layer digests in the store, bottom first.
    pub layers: Vec<String>,
    /// Env, Cmd, Entrypoint, WorkingDir, User.
    pub config: RuntimeConfig,
    /// Seconds since the epoch when it was pulled or imported.
    pub created: u64,
    /// A registry image anyone may pull (its manifest was served without
    /// credentials): any user may start it from the cache. Otherwise a
    /// user must show the registry lets them read it first.
    #[serde(default)]
    pub public: bool,
    /// Pulled from a registry anyone may run (plain HTTP: loopback,
    /// `insecure`), by this puller (`uid N`): only they may start it from
    /// the cache, whatever that registry answers; anyone else pulls again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_by: Option<String>,
}

impl ImageRecord {
    /// Whether a user other than whoever pulled it must show they may pull
    /// it before starting it from the cache.
    pub fn needs_access_check(&self) -> bool {
        self.source == "registry" && !self.public && self.pulled_by.is_none()
    }
}

impl ImageRecord {
    /// The image ready to run, if all its layers are still in the store.
    pub fn resolve(&self, store: &Store) -> Option<ResolvedImage> {
        let layers = self
            .layers
            .iter()
            .map(|d| store.layer_path(d).ok().filter(|p| p.is_dir()))
            .collect::<Option<Vec<_>>>()?;
        Some(ResolvedImage {
            layers,
            layer_digests: self.layers.clone(),
            config: self.config.clone(),
            id: self.id.clone(),
            image_tree: None,
        })
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn record_path(store: &Store, name: &str) -> PathBuf {
    store.root().join("images").join(format!(
        "{}.json",
        hex::encode(Sha256::digest(name.as_bytes()))
    ))
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes (or replaces) the record of `record.name`.
pub fn save(store: &Store, record: &ImageRecord) -> Result<(), StoreError> {
    let path = record_path(store, &record.name);
    let tmp = store
        .tmp_dir()
        .join(format!("record.{}.{}", std::process::id(), now()));
    let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
    fs::write(&tmp, bytes)
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io {
                path: path.clone(),
                source: e,
            }
        })
}

/// The record of `name`, if there is one.
pub fn load(store: &Store, name: &str) -> Option<ImageRecord> {
    let bytes = fs::read(record_path(store, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every record, by name.
pub fn list(store: &Store) -> Vec<ImageRecord> {
    let dir = store.root().join("images");
    let mut out: Vec<ImageRecord> = fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Removes the record of `name`; false when there was none.
pub fn remove(store: &Store, name: &str) -> Result<bool, StoreError> {
    let path = record_path(store, name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, source: &str, public: bool) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            source: source.into(),
            id: "sha256:abc".into(),
            manifest_digest: None,
            layers: vec![format!("sha256:{}", "0".repeat(64))],
            config: Default::default(),
            created: 7,
            public,
            pulled_by: None,
        }
    }

    #[test]
    fn a_record_is_found_by_its_name_whatever_the_name_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), false, false).unwrap();
        let name = "registry.local:5000/team/../img:1.0";
        save(&store, &record(name, "registry", false)).unwrap();
        assert_eq!(load(&store, name), Some(record(name, "registry", false)));
        // One file per name, inside images/, whatever the name's slashes.
        assert_eq!(
            std::fs::read_dir(store.root().join("images"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(list(&store).len(), 1);
        // Replaced, not added.
        save(&store, &record(name, "registry", true)).unwrap();
        assert_eq!(list(&store).len(), 1);
        assert!(load(&store, name).unwrap().public);
        assert!(remove(&store, name).unwrap());
        assert!(!remove(&store, name).unwrap());
        assert_eq!(load(&store, name), None);
    }

    #[test]
    fn only_private_registry_images_need_an_access_check() {
        assert!(record("r", "registry", false).needs_access_check());
        assert!(!record("r", "registry", true).needs_access_check());
        assert!(!record("f", "oci-layout", false).needs_access_check());
        assert!(!record("f", "squashfs", false).needs_access_check());
        // A registry anyone may run is never asked: its puller alone may
        // start the image (the resolver pulls again for anyone else).
        let mut anyones = record("127.0.0.1:5000/x:1", "registry", false);
        anyones.pulled_by = Some("uid 1001".into());
        assert!(!anyones.needs_access_check());
    }

    #[test]
    fn an_image_whose_layer_is_gone_does_not_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), false, false).unwrap();
        assert!(record("x", "oci-layout", false).resolve(&store).is_none());
    }
}
