//! Each user's list of their named containers (`berth ps` for users, who
//! cannot read root's store): `<summary_dir>/<uid>.json`, written by root,
//! owned by and readable to that user only, in a root-owned directory
//! others may pass through but not list (0711). Root never reads it back,
//! so nothing a user does to it reaches root.

use std::fs::{self, File, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::NamedContainers;

/// The summary directory's mode: root writes, users reach their own file
/// by name but list nothing.
const DIR_MODE: u32 = 0o711;

impl NamedContainers {
    /// Writes `uid`'s containers (`list(Some(uid))`, as JSON) to
    /// `<dir>/<uid>.json`, given to the user (mode 0400), replacing the
    /// last one whole. `dir` is made root's (0711) when missing and refused
    /// when it is a symlink or not a root-owned directory.
    pub fn write_summary(&self, uid: u32, dir: &Path) -> io::Result<()> {
        summary_dir(dir)?;
        let text = serde_json::to_vec_pretty(&self.list(Some(uid))).map_err(io::Error::other)?;
        let (mut file, tmp) = create_temporary(dir, uid)?;
        let written = give_to_user(&file, uid)
            .and_then(|()| file.write_all(&text))
            .and_then(|()| fs::rename(&tmp, dir.join(format!("{uid}.json"))));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

/// The path of `uid`'s summary in `dir`.
pub fn summary_path(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}.json"))
}

/// Makes `dir` (root's, 0711) or checks the one there is a real,
/// root-owned directory, and gives it that mode.
fn summary_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?,
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() || meta.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: not a root-owned directory (a symlink, a file or someone else's): \
                 refusing to write named container summaries there",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// A new file in `dir` only this call made (`O_EXCL`, no symlink followed).
fn create_temporary(dir: &Path, uid: u32) -> io::Result<(File, PathBuf)> {
    let mut attempt = 0u32;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(
            ".{uid}.json.{}.{nanos}.{attempt}",
            std::process::id()
        ));
        let opened = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Gives the open file to `uid` (and their group, else gid = uid),
/// readable by them only.
fn give_to_user(file: &File, uid: u32) -> io::Result<()> {
    let gid = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or(uid, |user| user.gid.as_raw());
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
    file.set_permissions(Permissions::from_mode(0o400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::test_kit::temp_store;

    fn summary_of(containers: &NamedContainers, uid: u32) -> (tempfile::TempDir, PathBuf) {
        let run = tempfile::tempdir().unwrap();
        // Users pass through the test's directory as they would through /run.
        fs::set_permissions(run.path(), Permissions::from_mode(0o755)).unwrap();
        let dir = run.path().join("berth/ps");
        containers.write_summary(uid, &dir).unwrap();
        (run, dir)
    }

    #[test]
    fn the_summary_is_the_users_alone_in_a_root_directory_they_cannot_list() {
        let (_store_dir, store) = temp_store();
        let containers = NamedContainers::of(&store);
        super::super::test_kit::add(&store, 4321, "dev", 100);
        let (_run, dir) = summary_of(&containers, 4321);
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o711));
        let file = fs::symlink_metadata(summary_path(&dir, 4321)).unwrap();
        assert_eq!((file.uid(), file.mode() & 0o7777), (4321, 0o400));
        let listed: Vec<super::super::Listed> =
            serde_json::from_slice(&fs::read(summary_path(&dir, 4321)).unwrap()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].record.name, "dev");
        // Only the temporary file was made, and it is gone.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn another_users_summary_is_not_readable() {
        let (_store_dir, store) = temp_store();
        let containers = NamedContainers::of(&store);
        let (_run, dir) = summary_of(&containers, 4321);
        containers.write_summary(4322, &dir).unwrap();
        let own = summary_path(&dir, 4321);
        let other = summary_path(&dir, 4322);
        assert!(crate::as_user::as_user(4321, 4321, &[], || {
            File::open(&own).is_ok() && File::open(&other).is_err() && fs::read_dir(&dir).is_err()
        }));
    }

    #[test]
    fn a_symlink_in_place_of_the_summary_is_replaced_not_followed() {
        let (_store_dir, store) = temp_store();
        let containers = NamedContainers::of(&store);
        let (run, dir) = summary_of(&containers, 4321);
        let target = run.path().join("target");
        fs::write(&target, "root's").unwrap();
        let path = summary_path(&dir, 4321);
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        containers.write_summary(4321, &dir).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "root's");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.uid(), 4321);
    }

    #[test]
    fn a_symlinked_or_foreign_directory_is_refused() {
        let run = tempfile::tempdir().unwrap();
        let (_store_dir, store) = temp_store();
        let containers = NamedContainers::of(&store);
        let real = run.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = run.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(containers.write_summary(1, &link).is_err());
        std::os::unix::fs::chown(&real, Some(4321), None).unwrap();
        assert!(containers.write_summary(1, &real).is_err());
        let file = run.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(containers.write_summary(1, &file).is_err());
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
    }
}
