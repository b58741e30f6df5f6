//! docker-archive tars (`docker save`, `skopeo copy ... docker-archive:`):
//! `manifest.json` names the config and the layer files inside the tar; each
//! layer is read in place (seek + length), never unpacked to disk first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::oci::ImageConfigFile;
use super::records::{self, ImageRecord};
use super::store::{sniff_compression, Store};
use super::ImageError;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Whether the file starts like a tar archive (`ustar` at offset 257).
pub fn is_tar(path: &Path) -> bool {
    let mut head = [0u8; 263];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[257..262] == b"ustar"
}

/// Where each member of the tar lies: name -> (offset of data, size).
fn index(path: &Path) -> std::io::Result<std::collections::HashMap<String, (u64, u64)>> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut map = std::collections::HashMap::new();
    for entry in archive.entries()? {
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
pub fn import(store: &Store, path: &Path, name: Option<&str>) -> Result<ImageRecord, ImageError> {
    let shown = path.display().to_string();
    let bad = |message: String| ImageError::Invalid {
        image: shown.clone(),
        message,
    };
    let members = index(path).map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
    let read_member = |member: &str| -> Result<Box<dyn Read>, ImageError> {
        let (offset, size) = *members
            .get(member)
            .ok_or_else(|| bad(format!("{member} is missing from the archive")))?;
        let mut file = File::open(path).map_err(|e| bad(e.to_string()))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Box::new(file.take(size)))
    };
    let mut manifest_text = String::new();
    read_member("manifest.json")?
        .read_to_string(&mut manifest_text)
        .map_err(|e| bad(format!("manifest.json: {e}")))?;
    let manifests: Vec<ArchiveManifest> =
        serde_json::from_str(&manifest_text).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let manifest = match manifests.as_slice() {
        [one] => one,
        [] => return Err(bad("manifest.json lists no image".into())),
        _ => {
            return Err(bad(
                "the archive holds several images; save one image per archive".into(),
            ))
        }
    };
    let mut config_bytes = Vec::new();
    read_member(&manifest.config)?
        .read_to_end(&mut config_bytes)
        .map_err(|e| bad(e.to_string()))?;
    let config: ImageConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("image config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(bad(format!(
            "{} layers but {} diff_ids in the config",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    for (member, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let reader = read_member(member)?;
        let (compression, reader) =
            sniff_compression(reader).map_err(|e| bad(format!("{member}: {e}")))?;
        store.ensure_layer(diff_id, None, compression, || Ok(Box::new(reader)))?;
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
    };
    records::save(store, &record)?;
    Ok(record)
}
