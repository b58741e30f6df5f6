//! Directories only root may change: where root keeps a file others must
//! not swap (the audit trail, the login service's socket).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether `dir` and every directory above it is root's and writable by no
/// one else (or sticky, as /tmp: no one else may rename root's entries
/// there); the first that is not, named, otherwise.
pub fn only_root_may_change(dir: &Path) -> std::io::Result<()> {
    for ancestor in dir.ancestors() {
        let meta = std::fs::symlink_metadata(ancestor)?;
        let others_may_write = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if !meta.is_dir() || meta.uid() != 0 || others_may_write {
            return Err(std::io::Error::other(format!(
                "{} must be a directory of root's that no one else may write",
                ancestor.display()
            )));
        }
    }
    Ok(())
}
