//! docker-archive tars (`docker save`, `skopeo copy ... docker-archive:`):
//! `manifest.json` names the config and the layer files inside the tar; each
//! layer is read in place (seek + length), never unpacked to disk first.

use std::io::{Read, Seek, SeekFrom};

use serde::Deserialize;

use super::oci::{self, ImageConfigFile};
use super::records::{self, ImageRecord};
use super::store::{file_version, sniff_compression, Store};
use super::{ImageError, OpenedPath};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Whether a file's first 263 bytes look like a tar archive (`ustar` at offset 257).
pub fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// Where each member of the tar lies: name -> (offset of data, size).
fn index(file: &OpenedPath) -> std::io::Result<std::collections::HashMap<String, (u64, u64)>> {
    let (reader, budget) = super::tar_guard::capped(file.reader()?);
    let mut archive = tar::Archive::new(reader);
    let mut map = std::collections::HashMap::new();
    let mut entries = archive.entries_with_seek()?;
    while let Some(entry) = budget.next_entry(|| entries.next()) {
        let entry = entry?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        map.insert(name, (entry.raw_file_position(), entry.size()));
    }
    Ok(map)
}

/// Imports a docker-archive into the store and records it as `name` (or its
/// first RepoTag, or the file name).
///
/// Everything is read from the descriptor the user opened; each layer is
/// hashed while it is extracted and kept only when it matches its diff_id,
/// so a file changed meanwhile never puts other content under a digest.
pub fn import(
    store: &Store,
    file: &OpenedPath,
    name: Option<&str>,
) -> Result<ImageRecord, ImageError> {
    let shown = file.path.display().to_string();
    let bad = |message: String| ImageError::Invalid {
        image: shown.clone(),
        message,
    };
    let members = index(file).map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
    let read_member = |member: &str| -> Result<Box<dyn Read>, ImageError> {
        let (offset, size) = *members
            .get(member)
            .ok_or_else(|| bad(format!("{member} is missing from the archive")))?;
        let mut reader = file.reader().map_err(|e| bad(e.to_string()))?;
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Box::new(reader.take(size)))
    };
    let manifest_text = oci::read_json_limited(read_member("manifest.json")?)
        .map_err(|e| bad(format!("manifest.json: {e}")))?;
    let manifests: Vec<ArchiveManifest> =
        serde_json::from_slice(&manifest_text).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let manifest = match manifests.as_slice() {
        [one] => one,
        [] => return Err(bad("manifest.json lists no image".into())),
        _ => {
            return Err(bad(
                "the archive holds several images; save one image per archive".into(),
            ))
        }
    };
    let config_bytes = oci::read_json_limited(read_member(&manifest.config)?)
        .map_err(|e| bad(format!("{}: {e}", manifest.config)))?;
    let config: ImageConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("image config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(bad(format!(
            "{} layers but {} diff_ids in the config",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    // A user's archive must hold the layers it names (checked once per file
    // version), even those already in the store.
    let identity = match &file.user {
        Some(user) => Some(
            file_version(std::os::fd::AsFd::as_fd(&*file.fd), Some(user))
                .map_err(|e| bad(e.to_string()))?,
        ),
        None => None,
    };
    for (member, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let reader = read_member(member)?;
        let (compression, reader) =
            sniff_compression(reader).map_err(|e| bad(format!("{member}: {e}")))?;
        let proof = identity.as_ref().map(|i| format!("{i}:{member}"));
        store.ensure_layer(diff_id, None, compression, proof.as_deref(), || {
            Ok(Box::new(reader))
        })?;
    }
    let name = name
        .map(str::to_string)
        .or_else(|| manifest.repo_tags.as_ref().and_then(|t| t.first().cloned()))
        .unwrap_or(shown.clone());
    let record = ImageRecord {
        name,
        source: "docker-archive".into(),
        id: format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config_bytes))
        ),
        manifest_digest: None,
        layers: config.rootfs.diff_ids.clone(),
        config: config.config.unwrap_or_default(),
        created: records::now(),
        public: false,
        pulled_by: None,
    };
    records::save(store, &record)?;
    Ok(record)
}
