//! `berth gc`: shrinks the store to a size limit by removing, least recently
//! used first, layers no image record refers to, then whole images. Under
//! the limit it removes nothing: the store is a cache. A layer used by a
//! running container (shared "in use" lock) or being fetched is never removed,
//! nor is a layer of a named container (Slurm `container_scope=global`) while
//! the container exists, nor the images it came from.
//!
//! Before that, [`collect_containers`] removes the named containers unused
//! for `store.container_max_age`.

use std::collections::{BTreeMap, BTreeSet};

use super::records;
use super::store::{Store, StoreError};
use crate::slurm::named::{NamedContainers, NamedError};

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
    /// Layers kept because a named container is made of them.
    pub layers_of_named: usize,
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
    let kept = NamedContainers::of(store).layers_kept();
    report.layers_of_named = sizes.keys().filter(|d| kept.contains(*d)).count();
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
        .filter(|d| !refs.contains(*d) && !kept.contains(*d))
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
                .any(|d| in_use.contains(d) || kept.contains(d) || store.layer_in_use(d))
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

/// What [`collect_containers`] did.
#[derive(Debug, Default)]
pub struct ContainersReport {
    /// The containers removed: (uid, name).
    pub removed: Vec<(u32, String)>,
    /// Bytes their writable layers took on disk.
    pub bytes_freed: u64,
    /// Old enough but kept: in use, or locked by a step starting in it.
    pub busy: usize,
    /// Those that could not be removed, and why.
    pub errors: Vec<NamedError>,
}

/// Removes the named containers not running, with no step using them,
/// last used more than `max_age_secs` before `now` (seconds since the
/// epoch); `max_age_secs` 0 keeps them all. A container whose lock is held
/// (a step is starting in it) is left for the next collection.
pub fn collect_containers(store: &Store, max_age_secs: u64, now: u64) -> ContainersReport {
    let mut report = ContainersReport::default();
    if max_age_secs == 0 {
        return report;
    }
    let stale = |last_used: u64| now.saturating_sub(last_used) > max_age_secs;
    let containers = NamedContainers::of(store);
    for listed in containers.list(None) {
        let (uid, name) = (listed.record.uid, listed.record.name.clone());
        if !stale(listed.record.last_used) {
            continue;
        }
        if listed.running || !listed.steps.is_empty() {
            report.busy += 1;
            continue;
        }
        let held = match containers.try_lock(uid, &name) {
            Ok(Some(held)) => held,
            Ok(None) => {
                report.busy += 1;
                continue;
            }
            Err(e) => {
                report.errors.push(e);
                continue;
            }
        };
        // Read again under the lock: a step may have used it meanwhile.
        if !held.record().is_some_and(|r| stale(r.last_used)) {
            continue;
        }
        let bytes = layer_bytes(&held.layer_file());
        match held.remove() {
            Ok(()) => {
                report.bytes_freed += bytes;
                report.removed.push((uid, name));
            }
            Err(NamedError::InUse { .. }) => report.busy += 1,
            Err(e) => report.errors.push(e),
        }
    }
    report
}

/// Bytes a file takes on disk (a sparse layer takes less than its size).
fn layer_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::Compression;
    use crate::image::records::ImageRecord;
    use crate::image::store::test_kit::{one_file_tar, temp_store as store};
    use std::time::{Duration, SystemTime};

    /// Adds a layer holding one file of `bytes` bytes, last used `age` ago.
    fn layer(store: &Store, name: &str, bytes: usize, age: u64) -> String {
        let (data, digest) = one_file_tar(name, &vec![b'x'; bytes]);
        store
            .ensure_layer(&digest, None, Compression::None, None, || {
                Ok(Box::new(std::io::Cursor::new(data)))
            })
            .unwrap();
        let used = SystemTime::now() - Duration::from_secs(age);
        let meta = store
            .root()
            .join("layers/meta")
            .join(format!("{}.json", &digest["sha256:".len()..]));
        std::fs::File::options()
            .write(true)
            .open(meta)
            .unwrap()
            .set_modified(used)
            .unwrap();
        digest
    }

    fn image(store: &Store, name: &str, layers: &[&String], created: u64) {
        records::save(
            store,
            &ImageRecord {
                name: name.into(),
                source: "oci-layout".into(),
                id: format!("sha256:{name}"),
                manifest_digest: None,
                layers: layers.iter().map(|d| d.to_string()).collect(),
                config: Default::default(),
                created,
                public: false,
                pulled_by: None,
            },
        )
        .unwrap();
    }

    #[test]
    fn under_the_limit_nothing_goes() {
        let (_dir, store) = store();
        let a = layer(&store, "a", 1000, 100);
        let report = collect(&store, u64::MAX).unwrap();
        assert_eq!(report.layers_removed, 0);
        assert!(store.has_layer(&a));
    }

    #[test]
    fn unreferenced_layers_go_first_oldest_first_and_only_as_many_as_needed() {
        let (_dir, store) = store();
        let old = layer(&store, "old", 4000, 300);
        let newer = layer(&store, "newer", 4000, 100);
        let kept = layer(&store, "kept", 4000, 500);
        image(&store, "img", &[&kept], 1);
        let total: u64 = [&old, &newer, &kept]
            .iter()
            .map(|d| store.layer_meta(d).bytes)
            .sum();
        // One orphan's worth over the limit: the oldest orphan goes.
        let report = collect(&store, total - 1).unwrap();
        assert_eq!(report.layers_removed, 1, "{report:?}");
        assert!(!store.has_layer(&old));
        assert!(store.has_layer(&newer) && store.has_layer(&kept));
        assert!(report.images_removed.is_empty());
        assert_eq!(report.bytes_left, total - report.bytes_freed);
    }

    #[test]
    fn then_whole_images_least_recently_used_first() {
        let (_dir, store) = store();
        let shared = layer(&store, "shared", 2000, 50);
        let stale = layer(&store, "stale", 2000, 900);
        let fresh = layer(&store, "fresh", 2000, 10);
        // Made after the other: use, not age, decides.
        image(&store, "stale-image", &[&shared, &stale], 2);
        image(&store, "fresh-image", &[&shared, &fresh], 1);
        let report = collect(&store, store.layer_meta(&shared).bytes * 2).unwrap();
        assert_eq!(report.images_removed, ["stale-image"]);
        // The shared layer stays with the image still using it.
        assert!(store.has_layer(&shared) && store.has_layer(&fresh));
        assert!(!store.has_layer(&stale));
        assert!(records::load(&store, "stale-image").is_none());
        assert!(records::load(&store, "fresh-image").is_some());
    }

    #[test]
    fn a_layer_a_container_uses_is_never_removed() {
        let (_dir, store) = store();
        let busy = layer(&store, "busy", 3000, 900);
        let image_layer = layer(&store, "img", 3000, 800);
        image(&store, "running", &[&busy, &image_layer], 1);
        let _held = store.hold_layers(std::slice::from_ref(&busy)).unwrap();
        let report = collect(&store, 0).unwrap();
        assert!(store.has_layer(&busy));
        // The image of a running container is not removed either.
        assert!(report.images_removed.is_empty(), "{report:?}");
        assert!(store.has_layer(&image_layer));
    }

    #[test]
    fn layers_of_named_containers_and_their_images_stay() {
        let (_dir, store) = store();
        let named = layer(&store, "named", 3000, 900);
        let orphan = layer(&store, "orphan", 3000, 900);
        let other = layer(&store, "other", 3000, 900);
        image(&store, "base", &[&named], 1);
        image(&store, "unused", &[&other], 1);
        let kept = [named.clone(), orphan.clone()];
        crate::slurm::named::test_kit::add_with_layers(&store, 1000, "dev", 1, &kept);
        let report = collect(&store, 0).unwrap();
        assert!(store.has_layer(&named) && store.has_layer(&orphan));
        assert!(!store.has_layer(&other));
        assert_eq!(report.images_removed, ["unused"]);
        assert!(records::load(&store, "base").is_some());
        assert_eq!(report.layers_of_named, 2, "{report:?}");
    }

    mod containers {
        use super::*;
        use crate::slurm::named::test_kit::add;
        use crate::slurm::named::NamedContainers;
        use crate::slurm::record::KeeperRecord;

        const DAY: u64 = 86400;
        const NOW: u64 = 100 * DAY;

        fn names(store: &Store) -> Vec<String> {
            NamedContainers::of(store)
                .list(None)
                .into_iter()
                .map(|l| l.record.name)
                .collect()
        }

        #[test]
        fn old_unused_containers_go_and_their_space_is_counted() {
            let (_dir, store) = store();
            let old = add(&store, 1000, "old", NOW - 31 * DAY);
            add(&store, 1000, "recent", NOW - 29 * DAY);
            add(&store, 1001, "old-too", NOW - 40 * DAY);
            let report = collect_containers(&store, 30 * DAY, NOW);
            assert_eq!(
                report.removed,
                [(1000, "old".to_string()), (1001, "old-too".to_string())]
            );
            assert!(report.bytes_freed >= 2 * 64 * 1024, "{report:?}");
            assert!(report.errors.is_empty(), "{report:?}");
            assert_eq!(names(&store), ["recent"]);
            assert!(!old.exists());
        }

        #[test]
        fn max_age_zero_keeps_everything() {
            let (_dir, store) = store();
            add(&store, 1000, "ancient", 0);
            let report = collect_containers(&store, 0, NOW);
            assert!(report.removed.is_empty());
            assert_eq!(names(&store), ["ancient"]);
        }

        #[test]
        fn running_used_or_locked_containers_stay() {
            let (_dir, store) = store();
            let me = KeeperRecord::of_keeper(std::process::id() as i32).unwrap();
            let running = add(&store, 1000, "running", 0);
            me.write(&running.join("keeper.json")).unwrap();
            let used = add(&store, 1000, "used", 0);
            me.write(&used.join("users/5.0.json")).unwrap();
            add(&store, 1000, "locked", 0);
            let containers = NamedContainers::of(&store);
            let _held = containers.try_lock(1000, "locked").unwrap().unwrap();
            let report = collect_containers(&store, DAY, NOW);
            assert!(report.removed.is_empty(), "{report:?}");
            assert_eq!(report.busy, 3);
            assert_eq!(names(&store), ["locked", "running", "used"]);
        }

        #[test]
        fn a_dead_keeper_does_not_keep_a_container() {
            let (_dir, store) = store();
            let dir = add(&store, 1000, "crashed", 0);
            let gone = KeeperRecord {
                pid: i32::MAX,
                started: 1,
                ..Default::default()
            };
            gone.write(&dir.join("keeper.json")).unwrap();
            gone.write(&dir.join("users/5.0.json")).unwrap();
            let report = collect_containers(&store, DAY, NOW);
            assert_eq!(report.removed.len(), 1, "{report:?}");
        }
    }
}
