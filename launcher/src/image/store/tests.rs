//! The store's own rules: digests, whole layers, layers in use.
use super::test_kit::{one_file_tar, temp_store as store};
use super::*;

#[test]
fn only_sha256_digests_name_layers() {
    let good = format!("sha256:{}", "a".repeat(64));
    assert_eq!(hex_of(&good).unwrap(), "a".repeat(64));
    for bad in [
        "sha256:../../etc".to_string(),
        format!("sha512:{}", "a".repeat(64)),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        "a".repeat(64),
    ] {
        assert!(
            matches!(hex_of(&bad), Err(StoreError::BadDigest(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_layer_appears_whole_and_only_when_its_digest_matches() {
    let (_dir, store) = store();
    let (data, digest) = one_file_tar("hello", b"hello");
    let wrong = format!("sha256:{}", "b".repeat(64));
    let refused = store.ensure_layer(&wrong, None, Compression::None, None, || {
        Ok(Box::new(io::Cursor::new(data.clone())))
    });
    assert!(
        matches!(refused, Err(StoreError::DigestMismatch { .. })),
        "{refused:?}"
    );
    assert!(!store.has_layer(&wrong));
    assert_eq!(
        fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "tmp/ not cleaned"
    );
    let (path, report) = store
        .ensure_layer(&digest, None, Compression::None, None, || {
            Ok(Box::new(io::Cursor::new(data.clone())))
        })
        .unwrap();
    assert!(report.is_some());
    assert_eq!(fs::read(path.join("hello")).unwrap(), b"hello");
    assert_eq!(store.layers(), std::slice::from_ref(&digest));
    assert_eq!(store.layer_meta(&digest).bytes, 5);
    // Already there: nothing is read again.
    let (_, again) = store
        .ensure_layer(&digest, None, Compression::None, None, || {
            panic!("the blob is read for a layer already in the store")
        })
        .unwrap();
    assert!(again.is_none());
}

#[test]
fn a_layer_in_use_is_kept_and_one_not_in_use_is_removed() {
    let (_dir, store) = store();
    let (data, digest) = one_file_tar("hello", b"hello");
    store
        .ensure_layer(&digest, None, Compression::None, None, || {
            Ok(Box::new(io::Cursor::new(data)))
        })
        .unwrap();
    let held = store.hold_layers(std::slice::from_ref(&digest)).unwrap();
    assert!(store.layer_in_use(&digest));
    assert!(!store.remove_layer(&digest).unwrap());
    assert!(store.has_layer(&digest));
    drop(held);
    assert!(!store.layer_in_use(&digest));
    assert!(store.remove_layer(&digest).unwrap());
    assert!(!store.has_layer(&digest) && store.layers().is_empty());
}

/// A store made before layers dropped their tars' owners: opened by root,
/// every file of its layers becomes root's, once, and says so.
#[test]
fn a_root_store_of_an_older_berth_gets_its_layer_files_given_to_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (scripts/test.sh runs as root)");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let layer = root.join("layers/sha256").join("c".repeat(64));
    fs::create_dir_all(layer.join("home/app")).unwrap();
    fs::write(layer.join("home/app/data"), b"x").unwrap();
    std::os::unix::fs::symlink("data", layer.join("home/app/link")).unwrap();
    for path in ["home/app", "home/app/data"] {
        std::os::unix::fs::lchown(layer.join(path), Some(1000), Some(1000)).unwrap();
    }
    std::os::unix::fs::lchown(layer.join("home/app/link"), Some(42), Some(42)).unwrap();
    Store::open(&root, true, false).unwrap();
    for path in ["home", "home/app", "home/app/data", "home/app/link"] {
        let meta = fs::symlink_metadata(layer.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
    assert!(root.join("layers/.all-root").exists());
    // Once: a file given to someone else afterwards stays theirs.
    std::os::unix::fs::lchown(layer.join("home/app/data"), Some(7), Some(7)).unwrap();
    Store::open(&root, true, false).unwrap();
    let meta = fs::metadata(layer.join("home/app/data")).unwrap();
    assert_eq!(meta.uid(), 7);
}
