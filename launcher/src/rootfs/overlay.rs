//! The overlay mount options for a container root: image layers below, the
//! container's writable layer above.
//!
//! The kernel takes mount options in one page (4096 bytes). Store layers all
//! live in one directory, so the lower layers are named relative to it (the
//! mount is made with that directory as the working directory): 65 bytes a
//! layer instead of ~100, room for about 60 layers.

use std::path::{Path, PathBuf};

/// Longest option string the kernel accepts.
pub const MAX_OPTIONS_LEN: usize = 4095;

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

/// How to mount the overlay: the option string and the directory to mount
/// from, when the layers are named relative to it.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayMount {
    /// The `data` string for `mount -t overlay`.
    pub options: String,
    /// The working directory relative lower paths are resolved from.
    pub layer_dir: Option<PathBuf>,
}

/// Too many layers for one overlay mount.
#[derive(Debug, thiserror::Error)]
#[error("the image has too many layers ({0}) for one overlay mount; flatten it (e.g. squash it into one layer)")]
pub struct TooManyLayers(pub usize);

/// Builds the overlay options. `layers` are bottom first (overlayfs wants the
/// top first); `userxattr` is for mounts made inside a user namespace, where
/// layers carry `user.overlay.*` markers.
pub fn overlay_mount(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    userxattr: bool,
) -> Result<OverlayMount, TooManyLayers> {
    let common_parent = layers
        .first()
        .and_then(|l| l.parent())
        .filter(|p| layers.iter().all(|l| l.parent() == Some(*p)));
    let (lower, layer_dir): (Vec<String>, _) = match common_parent {
        Some(parent) if layers.len() > 1 => (
            layers
                .iter()
                .rev()
                .map(|l| escape(Path::new(l.file_name().unwrap_or_default())))
                .collect(),
            Some(parent.to_path_buf()),
        ),
        _ => (layers.iter().rev().map(|l| escape(l)).collect(), None),
    };
    let mut options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper),
        escape(work)
    );
    if userxattr {
        options.push_str(",userxattr");
    }
    if options.len() > MAX_OPTIONS_LEN {
        return Err(TooManyLayers(layers.len()));
    }
    Ok(OverlayMount { options, layer_dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_layers_are_named_relative_to_their_directory_top_first() {
        let layers = vec![PathBuf::from("/s/layers/a"), PathBuf::from("/s/layers/b")];
        let m = overlay_mount(&layers, Path::new("/m/upper"), Path::new("/m/work"), true).unwrap();
        assert_eq!(
            m.options,
            "lowerdir=b:a,upperdir=/m/upper,workdir=/m/work,userxattr"
        );
        assert_eq!(m.layer_dir, Some(PathBuf::from("/s/layers")));
    }

    #[test]
    fn a_single_directory_is_absolute_and_escaped() {
        let m = overlay_mount(
            &[PathBuf::from("/img/ro:ot")],
            Path::new("/m/u"),
            Path::new("/m/w"),
            false,
        )
        .unwrap();
        assert_eq!(
            m.options,
            "lowerdir=/img/ro\\:ot,upperdir=/m/u,workdir=/m/w"
        );
        assert_eq!(m.layer_dir, None);
    }

    #[test]
    fn sixty_store_layers_fit_and_too_many_are_refused() {
        let layer = |i: usize| PathBuf::from(format!("/var/lib/berth/layers/sha256/{i:064x}"));
        let upper = Path::new("/var/lib/berth/mnt/upper");
        let work = Path::new("/var/lib/berth/mnt/work");
        let sixty: Vec<_> = (0..60).map(layer).collect();
        assert!(overlay_mount(&sixty, upper, work, true).is_ok());
        let hundred: Vec<_> = (0..100).map(layer).collect();
        assert!(overlay_mount(&hundred, upper, work, true).is_err());
    }
}
