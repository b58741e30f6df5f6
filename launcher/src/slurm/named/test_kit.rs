//! Named containers for tests, made without mkfs or a loop device.

use std::path::PathBuf;

use super::{ContainerRecord, NamedContainers};
use crate::image::records::ImageRecord;
use crate::image::Store;

/// Makes `uid`'s container `name` from an image of `layers`, last used
/// at `last_used`, with a writable layer of 64 KiB of data: its directory.
pub(crate) fn add_with_layers(
    store: &Store,
    uid: u32,
    name: &str,
    last_used: u64,
    layers: &[String],
) -> PathBuf {
    let held = NamedContainers::of(store).lock(uid, name).unwrap();
    let dir = held.layer_file().parent().unwrap().to_path_buf();
    std::fs::write(held.layer_file(), vec![b'x'; 64 * 1024]).unwrap();
    let record = ContainerRecord {
        name: name.into(),
        uid,
        image: ImageRecord {
            name: format!("image-of-{name}"),
            source: "oci-layout".into(),
            id: format!("sha256:{name}"),
            manifest_digest: None,
            layers: layers.to_vec(),
            config: Default::default(),
            created: 1,
            public: false,
            pulled_by: None,
        },
        created: 1,
        last_used,
        last_job: Some(7),
        size_limit: 1 << 30,
        own_network: false,
    };
    std::fs::write(
        dir.join("container.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    dir
}

/// Makes `uid`'s container `name` (see [`add_with_layers`]), of no layers.
pub(crate) fn add(store: &Store, uid: u32, name: &str, last_used: u64) -> PathBuf {
    add_with_layers(store, uid, name, last_used, &[])
}
