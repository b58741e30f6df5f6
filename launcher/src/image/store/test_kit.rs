//! What the store's and gc's unit tests make: a store in a temporary
//! directory and one-file layers.

use sha2::Digest;

use super::Store;

/// A store in a temporary directory (unprivileged: nothing chowned).
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), false, false).unwrap();
    (dir, store)
}

/// A plain tar holding one regular file `name` with `content`, and its
/// digest (the layer's diff_id).
pub(crate) fn one_file_tar(name: &str, content: &[u8]) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, name, content).unwrap();
    let data = tar.into_inner().unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
    (data, digest)
}
