//! Users asking for their own named containers to be removed, without
//! root: `berth rm --container NAME` run by a user (on the node, e.g. in a
//! job step) leaves an empty file `remove.NAME` in their own request
//! directory, `<summary_dir>/<uid>.requests/` (made by root, given to the
//! user, 0700, in root's 0711 summary directory). Root carries the requests
//! out when the user's job ends on the node (the plugin's epilog runs `berth
//! slurm-leave`) and at `berth gc`: it only lists the names in that
//! directory (opened without following a link, checked to be the user's)
//! and unlinks them; it never opens or reads a file of the user's.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{valid_name, NamedContainers, NamedError};

/// `uid`'s request directory in the summary directory `dir`.
pub fn requests_dir(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}.requests"))
}

/// The request file asking for container `name`'s removal.
pub fn removal_request(dir: &Path, uid: u32, name: &str) -> PathBuf {
    requests_dir(dir, uid).join(format!("remove.{name}"))
}

/// Makes `uid`'s request directory in `dir` (a root-owned directory) when
/// missing: created by root, then given to the user, mode 0700.
pub(super) fn make_requests_dir(dir: &Path, uid: u32) -> io::Result<()> {
    let path = requests_dir(dir, uid);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() && meta.uid() == uid => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: not the user's directory", path.display()),
            ))
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    fs::DirBuilder::new().mode(0o700).create(&path)?;
    // Only root writes in `dir`: nothing can be swapped in between.
    std::os::unix::fs::lchown(&path, Some(uid), None)
}

impl NamedContainers {
    /// Carries out `uid`'s removal requests in summary directory `dir`:
    /// each named container asked for is removed if it is not in use; a
    /// request for one in use stays for the next time. The names removed.
    pub fn carry_out_removals(&self, uid: u32, dir: &Path) -> Vec<String> {
        let requests = requests_dir(dir, uid);
        let Ok(names) = request_names(&requests, uid) else {
            return vec![];
        };
        let mut removed = vec![];
        for name in names {
            let request = requests.join(format!("remove.{name}"));
            let outcome = match self.exists(uid, &name) {
                false => Ok(false),
                true => match self.try_lock(uid, &name) {
                    Ok(Some(held)) => held.remove().map(|()| true),
                    Ok(None) => Err(NamedError::InUse {
                        name: name.clone(),
                        by: "a step starting in it".into(),
                        what: "removed later",
                    }),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(was_there) => {
                    let _ = fs::remove_file(&request);
                    if was_there {
                        removed.push(name);
                    }
                }
                Err(NamedError::InUse { .. }) => {} // tried again next time
                Err(e) => {
                    tracing::warn!(uid, error = %e, "cannot remove a named container a user asked to remove");
                    let _ = fs::remove_file(&request);
                }
            }
        }
        removed
    }
}

/// The container names asked for in `requests` (a directory of `uid`'s,
/// never followed if a link), without reading any file.
fn request_names(requests: &Path, uid: u32) -> io::Result<Vec<String>> {
    let meta = fs::symlink_metadata(requests)?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(io::ErrorKind::PermissionDenied.into());
    }
    Ok(fs::read_dir(requests)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix("remove.")?.to_string();
            valid_name(&name).then_some(name)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::test_kit::temp_store;

    #[test]
    fn a_users_request_removes_their_container_and_nothing_else() {
        let (_d, store) = temp_store();
        let containers = NamedContainers::of(&store);
        let now = crate::image::records::now();
        for (uid, name) in [(1000, "dev"), (1000, "keep"), (2000, "dev")] {
            super::super::test_kit::add(&store, uid, name, now);
        }
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("ps");
        containers.write_summary(1000, &dir).unwrap();
        let requests = requests_dir(&dir, 1000);
        assert_eq!(fs::metadata(&requests).unwrap().uid(), 1000);
        fs::write(requests.join("remove.dev"), "").unwrap();
        fs::write(requests.join("remove.."), "").unwrap();
        fs::write(requests.join("remove.absent"), "").unwrap();
        fs::write(requests.join("other"), "").unwrap();
        assert_eq!(containers.carry_out_removals(1000, &dir), ["dev"]);
        assert!(!containers.exists(1000, "dev"));
        assert!(containers.exists(1000, "keep") && containers.exists(2000, "dev"));
        assert!(!requests.join("remove.dev").exists());
        assert!(!requests.join("remove.absent").exists());
        // Another user's directory (or a link to it) is not theirs.
        assert!(containers.carry_out_removals(2000, &dir).is_empty());
        fs::remove_dir_all(&requests).unwrap();
        std::os::unix::fs::symlink(requests_dir(&dir, 2000), &requests).unwrap();
        assert!(containers.carry_out_removals(1000, &dir).is_empty());
    }
}
