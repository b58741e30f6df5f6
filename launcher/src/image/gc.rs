//! `berth gc`: shrinks the store to a size limit by removing, least recently
//! used first, layers no image record refers to, then whole images. Under
//! the limit it removes nothing: the store is a cache. A layer used by a
//! running container (shared "in use" lock) or being fetched is never removed.

use std::collections::{BTreeMap, BTreeSet};

use super::records;
use super::store::{Store, StoreError};

/// What a collection did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GcReport {
    /// Layers removed.
    pub layers_removed: usize,
    /// Images whose records were removed to get under the limit.
    pub images_removed: Vec<String>,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Bytes of layers left in the store.
    pub bytes_left: u64,
    /// Layers kept because a container uses them.
    pub layers_in_use: usize,
}

/// Collects garbage down to `max_bytes`.
pub fn collect(store: &Store, max_bytes: u64) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    let mut sizes: BTreeMap<String, u64> = store
        .layers()
        .into_iter()
        .map(|d| {
            let bytes = store.layer_meta(&d).bytes;
            (d, bytes)
        })
        .collect();
    let mut total: u64 = sizes.values().sum();
    let mut images = records::list(store);
    let referenced = |images: &[records::ImageRecord]| -> BTreeSet<String> {
        images
            .iter()
            .flat_map(|r| r.layers.iter().cloned())
            .collect()
    };

    // 1. Layers no image refers to, least recently used first.
    let refs = referenced(&images);
    let mut orphans: Vec<String> = sizes
        .keys()
        .filter(|d| !refs.contains(*d))
        .cloned()
        .collect();
    orphans.sort_by_key(|d| store.layer_last_used(d));
    let mut in_use = BTreeSet::new();
    for digest in orphans {
        if total <= max_bytes {
            break;
        }
        remove(
            store,
            &digest,
            &mut sizes,
            &mut total,
            &mut report,
            &mut in_use,
        )?;
    }

    // 2. Whole images, least recently used first, while over the limit.
    images.sort_by_key(|r| {
        r.layers
            .iter()
            .map(|d| store.layer_last_used(d))
            .max()
            .unwrap_or(r.created as i64)
    });
    while total > max_bytes {
        let Some(pos) = images.iter().position(|r| {
            !r.layers
                .iter()
                .any(|d| in_use.contains(d) || store.layer_in_use(d))
        }) else {
            break;
        };
        let victim = images.remove(pos);
        records::remove(store, &victim.name)?;
        report.images_removed.push(victim.name.clone());
        let still = referenced(&images);
        for digest in victim.layers.iter().filter(|d| !still.contains(*d)) {
            remove(
                store,
                digest,
                &mut sizes,
                &mut total,
                &mut report,
                &mut in_use,
            )?;
        }
    }
    report.bytes_left = total;
    report.layers_in_use = in_use.len();
    Ok(report)
}

fn remove(
    store: &Store,
    digest: &str,
    sizes: &mut BTreeMap<String, u64>,
    total: &mut u64,
    report: &mut GcReport,
    in_use: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    if store.remove_layer(digest)? {
        let bytes = sizes.remove(digest).unwrap_or(0);
        *total -= bytes.min(*total);
        report.bytes_freed += bytes;
        report.layers_removed += 1;
    } else if sizes.contains_key(digest) {
        in_use.insert(digest.to_string());
    }
    Ok(())
}
