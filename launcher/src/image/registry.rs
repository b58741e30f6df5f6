//! Registry pulls (Docker Registry HTTP API v2, bearer-token and basic auth)
//! with oci-client. Blobs stream to disk (never whole layers in memory), are
//! digest-verified, and each layer is extracted as soon as its blob is there,
//! while others still download. Two processes pulling the same image fetch
//! each layer once: the layer lock is held from download to extraction.
//!
//! Only the berth binary has this module (feature `registry`): it starts a
//! tokio runtime and threads, which the SPANK plugin must not.

use std::io::Write;
use std::sync::Mutex;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::credentials;
use super::oci::{Compression, ImageConfigFile};
use super::records::{self, ImageRecord};
use super::reference::ImageRef;
use super::store::{hex_of, Store, StoreError};
use super::ImageError;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`host:port`) allowed over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Contents of credential files (netrc-style or docker config.json),
    /// searched in order. The caller reads them, as the right user.
    pub credentials: Vec<String>,
    /// Layers fetched at once.
    pub parallel: usize,
    /// Who pulls (`uid N`): a layer the store already has is taken without
    /// a download only when this registry repository was seen to hold it;
    /// for a registry anyone may run (plain HTTP: loopback, `insecure`),
    /// only when it was seen holding it for this same puller.
    pub holder: String,
    /// Registries pulled from a mirror instead (`[registry] mirrors`).
    pub mirrors: std::collections::BTreeMap<String, String>,
}

impl PullOptions {
    /// Where `reference`'s content is fetched from: its mirror's registry
    /// (the same repository, tag and digest), or its own.
    fn source_of(&self, reference: &ImageRef) -> ImageRef {
        match self.mirrors.get(&reference.registry) {
            Some(mirror) => ImageRef {
                registry: mirror.clone(),
                ..reference.clone()
            },
            None => reference.clone(),
        }
    }
}

/// Progress of a pull, for a terminal or a log line.
pub trait PullProgress: Sync {
    /// The manifest is resolved: these layers (digest, size) will be fetched
    /// unless `cached`.
    fn layers(&self, layers: &[(String, u64, bool)]);
    /// `n` more bytes of layer `index` arrived.
    fn downloaded(&self, index: usize, n: u64);
    /// Layer `index` is downloaded and being extracted.
    fn extracting(&self, index: usize);
    /// Layer `index` is in the store.
    fn done(&self, index: usize);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn layers(&self, _: &[(String, u64, bool)]) {}
    fn downloaded(&self, _: usize, _: u64) {}
    fn extracting(&self, _: usize) {}
    fn done(&self, _: usize) {}
}

fn registry_err(reference: &ImageRef, e: oci_client::errors::OciDistributionError) -> ImageError {
    use oci_client::errors::OciDistributionError as E;
    let not_authorized = || {
        format!(
            "not authorized; add credentials for {} (netrc or docker config.json)",
            reference.registry
        )
    };
    let message = match &e {
        E::AuthenticationFailure(m) => format!(
            "authentication failed ({m}); check the credentials for {}",
            reference.registry
        ),
        E::UnauthorizedError { .. } => not_authorized(),
        E::ImageManifestNotFoundError(_) => {
            "image not found in the registry (check the name and tag)".to_string()
        }
        E::RequestError(re) if re.is_connect() || re.is_timeout() => {
            format!("cannot reach registry {}: {re}", reference.registry)
        }
        other => {
            let text = other
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let lower = text.to_lowercase();
            if ["manifest unknown", "name unknown", "not found"]
                .iter()
                .any(|m| lower.contains(m))
            {
                "image not found in the registry (check the name and tag)".to_string()
            } else if lower.contains("unauthorized") || lower.contains("denied") {
                not_authorized()
            } else {
                text
            }
        }
    };
    ImageError::Invalid {
        image: reference.to_string(),
        message,
    }
}

/// The oci-client reference for ours.
fn client_reference(r: &ImageRef) -> Reference {
    match (&r.tag, &r.digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            r.registry.clone(),
            r.repository.clone(),
            tag.clone(),
            digest.clone(),
        ),
        (_, Some(digest)) => {
            Reference::with_digest(r.registry.clone(), r.repository.clone(), digest.clone())
        }
        (Some(tag), None) => {
            Reference::with_tag(r.registry.clone(), r.repository.clone(), tag.clone())
        }
        (None, None) => {
            Reference::with_tag(r.registry.clone(), r.repository.clone(), "latest".into())
        }
    }
}

/// Pulls `reference` into the store, records it under its canonical name and
/// returns the record.
pub fn pull(
    store: &Store,
    asked: &ImageRef,
    options: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<ImageRecord, ImageError> {
    // What an earlier, killed pull left is cleared first.
    store.remove_dead_tmp();
    // Fetched from the mirror where one is configured; named as asked.
    let source = options.source_of(asked);
    let reference = &source;
    let (runtime, client, auth) = connect(reference, options)?;
    let oci_ref = client_reference(reference);
    let (manifest, manifest_digest, config_text) = runtime
        .block_on(client.pull_manifest_and_config(&oci_ref, &auth))
        .map_err(|e| registry_err(reference, e))?;
    let config: ImageConfigFile =
        serde_json::from_str(&config_text).map_err(|e| ImageError::Invalid {
            image: reference.to_string(),
            message: format!("image config is not valid: {e}"),
        })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Invalid {
            image: reference.to_string(),
            message: format!(
                "manifest lists {} layers but the config has {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let jobs: Vec<(usize, &OciDescriptor, &String)> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
        .map(|(i, (d, id))| (i, d, id))
        .collect();
    progress.layers(
        &jobs
            .iter()
            .map(|(_, d, id)| {
                let cached = store.has_layer(id)
                    && store
                        .remembered(&held_by(reference, options, d, id))
                        .exists();
                (d.digest.clone(), d.size.max(0) as u64, cached)
            })
            .collect::<Vec<_>>(),
    );

    let queue = Mutex::new(jobs.into_iter());
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..options.parallel.max(1) {
            scope.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let Some((index, desc, diff_id)) = queue.lock().ok().and_then(|mut q| q.next())
                else {
                    return;
                };
                let fetched = fetch_layer(
                    store, &runtime, &client, &oci_ref, reference, options, desc, diff_id, index,
                    progress,
                );
                match fetched {
                    Ok(()) => progress.done(index),
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    // Whether anyone may pull it: then any user of the node may start it
    // from the cache; otherwise each user's own access is checked first.
    // A registry anyone may run proves nothing either way: its images are
    // their puller's alone.
    let anyones = anyones_registry(reference, options);
    let public = !anyones && matches!(auth, RegistryAuth::Anonymous)
        || runtime
            .block_on(
                new_client(reference, options)
                    .fetch_manifest_digest(&oci_ref, &RegistryAuth::Anonymous),
            )
            .is_ok();
    let record = ImageRecord {
        name: asked.to_string(),
        source: "registry".into(),
        id: manifest.config.digest.clone(),
        manifest_digest: Some(manifest_digest),
        layers: config.rootfs.diff_ids.clone(),
        config: config.config.unwrap_or_default(),
        created: records::now(),
        public,
        pulled_by: anyones.then(|| options.holder.clone()),
    };
    records::save(store, &record)?;
    Ok(record)
}

/// A client for `reference`'s registry (plain HTTP only for loopback and
/// `insecure` registries).
fn new_client(reference: &ImageRef, options: &PullOptions) -> Client {
    let mut plain_http = options.insecure.clone();
    if reference.is_loopback() {
        plain_http.push(reference.registry.clone());
    }
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        ..ClientConfig::default()
    })
}

/// A runtime, a client and the credentials `options` hold for `reference`.
fn connect(
    reference: &ImageRef,
    options: &PullOptions,
) -> Result<(tokio::runtime::Runtime, Client, RegistryAuth), ImageError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ImageError::Invalid {
            image: reference.to_string(),
            message: format!("cannot start the download runtime: {e}"),
        })?;
    let auth = match credentials::lookup(
        &options.credentials,
        &reference.registry,
        reference.user.as_deref(),
    ) {
        Some(c) => RegistryAuth::Basic(c.login, c.password),
        None => RegistryAuth::Anonymous,
    };
    Ok((runtime, new_client(reference, options), auth))
}

/// Whether `options`' credentials (or none: anonymous access counts) may
/// read `reference`'s manifest now: one manifest request, nothing fetched;
/// the manifest's digest. The error says whether the registry refused or
/// could not be reached.
pub fn check_access(asked: &ImageRef, options: &PullOptions) -> Result<String, ImageError> {
    let source = options.source_of(asked);
    let reference = &source;
    let (runtime, client, auth) = connect(reference, options)?;
    runtime
        .block_on(client.fetch_manifest_digest(&client_reference(reference), &auth))
        .map_err(|e| registry_err(reference, e))
}

/// The remembered fact that `reference`'s repository holds blob `desc`
/// of layer `diff_id`: registries let a manifest name only blobs its
/// repository holds, so a user who may pull the manifest may have the
/// layer. A plain-HTTP registry may be anyone's (a user's own on
/// loopback, serving a manifest that names another user's layers): there
/// the fact is the puller's alone.
fn held_by(
    reference: &ImageRef,
    options: &PullOptions,
    desc: &OciDescriptor,
    diff_id: &str,
) -> String {
    let holder = match anyones_registry(reference, options) {
        true => options.holder.as_str(),
        false => "",
    };
    format!(
        "registry holds\0{holder}\0{}/{}\0{}\0{diff_id}",
        reference.registry, reference.repository, desc.digest
    )
}

/// A registry anyone on the node may run or impersonate: plain HTTP
/// (loopback, or listed `insecure`).
fn anyones_registry(reference: &ImageRef, options: &PullOptions) -> bool {
    reference.is_loopback() || options.insecure.contains(&reference.registry)
}

/// Downloads one layer blob to tmp/ and extracts it, under the layer's
/// lock. A layer the store already has is taken as it is only when the
/// repository was seen to hold it ([`held_by`]); otherwise its blob is
/// downloaded and checked against the layer (nothing extracted again):
/// naming a layer's digest in a manifest gives nobody the layer.
#[allow(clippy::too_many_arguments)]
fn fetch_layer(
    store: &Store,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    oci_ref: &Reference,
    reference: &ImageRef,
    options: &PullOptions,
    desc: &OciDescriptor,
    diff_id: &str,
    index: usize,
    progress: &dyn PullProgress,
) -> Result<(), ImageError> {
    let held = store.remembered(&held_by(reference, options, desc, diff_id));
    let lock = store.lock_missing_layer(diff_id)?;
    if lock.is_none() {
        if held.exists() {
            return Ok(()); // in the store, and this repository was seen holding it
        }
        // A pull of this very blob may be finishing (its layer is in place
        // a moment before the fact is written, under the layer's lock).
        drop(store.lock_layer(diff_id)?);
        if held.exists() {
            return Ok(());
        }
    }
    let compression =
        Compression::of_media_type(&desc.media_type).ok_or_else(|| ImageError::Invalid {
            image: reference.to_string(),
            message: format!(
                "layer {} has unsupported media type {:?}",
                desc.digest, desc.media_type
            ),
        })?;
    let blob_hex = hex_of(&desc.digest)?;
    let blob_path = store.tmp_dir().join(format!(
        "{}.{}.{index}.blob",
        hex_of(diff_id)?,
        std::process::id()
    ));
    let io_err = |source: std::io::Error| StoreError::Io {
        path: blob_path.clone(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&blob_path).map_err(io_err)?;
        runtime
            .block_on(async {
                let mut stream = client.pull_blob_stream(oci_ref, desc).await?;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    file.write_all(&chunk)
                        .map_err(oci_client::errors::OciDistributionError::from)?;
                    progress.downloaded(index, chunk.len() as u64);
                }
                Ok::<(), oci_client::errors::OciDistributionError>(())
            })
            .map_err(|e| match e {
                oci_client::errors::OciDistributionError::IoError(source) => {
                    ImageError::Store(io_err(source))
                }
                other => ImageError::Invalid {
                    image: reference.to_string(),
                    message: format!("layer {}: {}", desc.digest, registry_err(reference, other)),
                },
            })?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        progress.extracting(index);
        let blob = Box::new(std::fs::File::open(&blob_path).map_err(io_err)?);
        match &lock {
            Some(lock) => {
                store.extract_layer(lock, diff_id, Some(&desc.digest), compression, blob)?;
            }
            None => store.verify_blob(diff_id, &desc.digest, compression, blob)?,
        }
        let _ = std::fs::write(&held, b"");
        Ok(())
    })();
    let _ = std::fs::remove_file(&blob_path);
    tracing::debug!(blob = blob_hex, ok = result.is_ok(), "layer fetched");
    result
}
