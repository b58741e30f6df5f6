//! The overlay mount options for a container root: image layers below, the
//! container's writable layer above.

use std::path::{Path, PathBuf};

/// Escapes the characters overlayfs treats as separators in a path option.
fn escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.display().to_string().chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `data` string for `mount -t overlay`. `layers` are bottom first;
/// overlayfs wants the top layer first. `userxattr` is for mounts made inside
/// a user namespace, where layers carry `user.overlay.*` markers.
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path, userxattr: bool) -> String {
    let lower: Vec<String> = layers.iter().rev().map(|l| escape(l)).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper),
        escape(work)
    );
    if userxattr {
        data.push_str(",userxattr");
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_layer_first_and_escaped() {
        let layers = vec![PathBuf::from("/s/a"), PathBuf::from("/s/b:c")];
        assert_eq!(
            overlay_options(&layers, Path::new("/m/upper"), Path::new("/m/work"), true),
            "lowerdir=/s/b\\:c:/s/a,upperdir=/m/upper,workdir=/m/work,userxattr"
        );
    }
}
