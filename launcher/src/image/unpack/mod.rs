//! Safe extraction of one layer tar into a directory in overlay format.
//!
//! The policy, for hostile input:
//! - **refused** (the whole layer fails, nothing is kept): an entry path with a
//!   `..` component; an entry whose parent path passes through a symlink of the
//!   layer (the classic "symlink then write through it" escape); a hardlink whose
//!   target has `..`, passes through a symlink, or is not in the layer; an
//!   entry that would replace a directory with a non-directory.
//! - **neutralised**: a leading `/` is dropped (the path is taken relative to the
//!   layer root); device nodes are skipped (the container's /dev comes from
//!   berth); setuid/setgid bits are cleared unless the admin allows them;
//!   extended attributes are not copied (file capabilities cannot come in);
//!   owners are not kept (every file of a layer is the extractor's).
//! - Symlinks are kept as they are, whatever they point at: they are resolved
//!   inside the container's root at run time, never during extraction.
//!
//! Whiteouts (`.wh.NAME`) become 0/0 character devices and opaque markers
//! (`.wh..wh..opq`) become the `overlay.opaque` xattr on the directory, as
//! overlayfs expects. Extraction never follows a symlink: every directory is
//! opened component by component with `O_NOFOLLOW`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::OFlag;
use nix::sys::stat::{fchmod, mkdirat, mknodat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat};

use crate::sys;

mod layer_fs;
use layer_fs::{copy_sparse, open_beneath, remove_existing, set_mtime, write_err, CopyError};

/// Why a layer was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry path tries to leave the layer.
    #[error("entry {path:?} escapes the layer (`..` component): refused")]
    PathEscape {
        /// The entry's path as written in the tar.
        path: String,
    },
    /// An entry is written through a symlink.
    #[error("entry {path:?} passes through the symlink {symlink:?}: refused")]
    ThroughSymlink {
        /// The entry's path.
        path: String,
        /// The symlink component.
        symlink: String,
    },
    /// A hardlink points outside the layer or at nothing.
    #[error("hardlink {path:?} -> {target:?} does not point at a file in this layer: refused")]
    BadHardlink {
        /// The link's path.
        path: String,
        /// Its target.
        target: String,
    },
    /// A non-directory would replace a directory.
    #[error("entry {path:?} would replace a directory: refused")]
    ReplacesDirectory {
        /// The entry's path.
        path: String,
    },
    /// A whiteout that names no entry (`.wh.`, `.wh..`, `.wh...`).
    #[error("whiteout {path:?} names no entry (`.`, `..` or nothing): refused")]
    BadWhiteout {
        /// The whiteout's path.
        path: String,
    },
    /// The layer's files add up to more than the store may hold.
    #[error("the layer's files add up to more than {max} bytes (store.max_size): refused")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// An entry lies deeper than the configured limit.
    #[error("entry {path:?} lies {depth} directories deep, more than the limit of {max} (store.max_layer_depth)")]
    TooDeep {
        /// The entry's path (shortened).
        path: String,
        /// Its depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The tar stream is damaged.
    #[error("layer is not a valid tar archive: {0}")]
    Tar(io::Error),
    /// Writing the extracted tree failed.
    #[error("cannot write {path:?} while unpacking: {source}")]
    Write {
        /// The path inside the layer.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// What the extractor may do on this host.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Running as root: the opaque marker is a `trusted.` xattr. Otherwise
    /// the marker is `user.overlay.opaque` (overlay mounted with
    /// `userxattr`). Either way every file belongs to the extractor (the
    /// tar's owners are dropped).
    pub privileged: bool,
    /// Keep setuid/setgid bits.
    pub allow_setuid: bool,
    /// The deepest entry accepted (directories below the layer root).
    pub max_depth: usize,
    /// The most file content (apparent bytes) a layer may hold.
    pub max_bytes: u64,
}

/// The default of `store.max_layer_depth`: real images nest a few dozen
/// directories deep; a hostile layer of thousands costs time per entry.
pub const DEFAULT_MAX_DEPTH: usize = 512;

/// Counts of what extraction did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries written.
    pub entries: u64,
    /// Device nodes skipped.
    pub devices_skipped: u64,
    /// Entries whose setuid/setgid bits were cleared.
    pub setid_cleared: u64,
    /// Whiteouts written.
    pub whiteouts: u64,
    /// File content written (apparent bytes; runs of zeros become holes).
    pub bytes: u64,
}

/// The xattr that marks an opaque directory.
pub fn opaque_xattr(privileged: bool) -> &'static str {
    if privileged {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

struct DeferredDir {
    components: Vec<OsString>,
    mode: u32,
    mtime: i64,
}

/// Extracts the tar stream `tar` into the existing empty directory `dest`.
pub fn unpack_layer<R: Read>(
    tar: R,
    dest: &Path,
    options: UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let root = sys::openat_owned(
        None,
        dest.as_os_str(),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| write_err("/", e))?;
    let (reader, budget) = super::tar_guard::capped(tar);
    let mut archive = tar::Archive::new(reader);
    let mut report = UnpackReport::default();
    let mut dirs: Vec<DeferredDir> = Vec::new();
    // The parent directory of the last entry, open: tar entries mostly
    // come directory by directory, so most entries need no lookup at all.
    let mut last_parent: Option<(Vec<OsString>, OwnedFd)> = None;
    let mut entries = archive.entries().map_err(UnpackError::Tar)?;
    while let Some(entry) = budget.next_entry(|| entries.next()) {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let components = clean_components(&raw_path).ok_or_else(|| UnpackError::PathEscape {
            path: shown.clone(),
        })?;
        let header = entry.header();
        let kind = header.entry_type();
        let mut mode = header.mode().map_err(UnpackError::Tar)? & 0o7777;
        // The tar's owners are not kept: every file of a store layer is
        // root's (or, rootless, the caller's), and a container shows them
        // all as its own identity's (an idmapped mount of the layers).
        let mtime = header.mtime().map_err(UnpackError::Tar)? as i64;
        if mode & 0o6000 != 0 && !options.allow_setuid && !kind.is_dir() {
            mode &= !0o6000;
            report.setid_cleared += 1;
        }
        let Some((name, parents)) = components.split_last() else {
            // The layer root itself ("./"): keep its mode for the end.
            if kind.is_dir() {
                dirs.push(DeferredDir {
                    components: vec![],
                    mode,
                    mtime,
                });
            }
            continue;
        };
        if components.len() > options.max_depth {
            return Err(UnpackError::TooDeep {
                path: shown.chars().take(200).collect(),
                depth: components.len(),
                max: options.max_depth,
            });
        }
        if last_parent
            .as_ref()
            .is_none_or(|(cached, _)| cached.as_slice() != parents)
        {
            let fd = open_beneath(&root, parents, true, &shown)?;
            last_parent = Some((parents.to_vec(), fd));
        }
        let Some((_, parent)) = last_parent.as_ref() else {
            continue;
        };
        let name_bytes = name.as_bytes();

        if name_bytes == b".wh..wh..opq" {
            sys::set_xattr(parent.as_fd(), opaque_xattr(options.privileged), b"y")
                .map_err(|e| write_err(&shown, e))?;
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(UnpackError::BadWhiteout { path: shown });
            }
            let hidden = OsStr::from_bytes(hidden);
            remove_existing(parent, hidden, &shown, true)?;
            mknodat(
                Some(parent.as_raw_fd()),
                hidden,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o000),
                0,
            )
            .map_err(|e| write_err(&shown, e))?;
            report.whiteouts += 1;
            continue;
        }

        use tar::EntryType;
        match kind {
            EntryType::Directory => {
                match mkdirat(
                    Some(parent.as_raw_fd()),
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o700),
                ) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        // A directory again (fine) or something else (replace it).
                        if open_beneath(parent, std::slice::from_ref(name), false, &shown).is_err()
                        {
                            remove_existing(parent, name, &shown, false)?;
                            mkdirat(
                                Some(parent.as_raw_fd()),
                                name.as_os_str(),
                                Mode::from_bits_truncate(0o700),
                            )
                            .map_err(|e| write_err(&shown, e))?;
                        }
                    }
                    Err(e) => return Err(write_err(&shown, e)),
                }
                dirs.push(DeferredDir {
                    components: components.clone(),
                    mode,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(parent, name, &shown, false)?;
                let fd = sys::openat_owned(
                    Some(parent.as_raw_fd()),
                    name.as_os_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| write_err(&shown, e))?;
                let mut file = File::from(fd);
                let budget = options.max_bytes.saturating_sub(report.bytes);
                let written = copy_sparse(&mut entry, &mut file, budget).map_err(|e| match e {
                    CopyError::TooLarge => UnpackError::TooLarge {
                        max: options.max_bytes,
                    },
                    CopyError::Io(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
                        ) =>
                    {
                        UnpackError::Tar(e)
                    }
                    CopyError::Io(e) => UnpackError::Write {
                        path: shown.clone(),
                        source: e,
                    },
                })?;
                report.bytes += written;
                fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| write_err(&shown, e))?;
                set_mtime(parent, name, mtime, &shown)?;
            }
            EntryType::Symlink => {
                let target = link_target(&entry, &shown)?;
                remove_existing(parent, name, &shown, false)?;
                symlinkat(
                    OsStr::from_bytes(&target),
                    Some(parent.as_raw_fd()),
                    name.as_os_str(),
                )
                .map_err(|e| write_err(&shown, e))?;
                set_mtime(parent, name, mtime, &shown)?;
            }
            EntryType::Link => {
                let target_raw = link_target(&entry, &shown)?;
                let target_shown = String::from_utf8_lossy(&target_raw).into_owned();
                let bad = || UnpackError::BadHardlink {
                    path: shown.clone(),
                    target: target_shown.clone(),
                };
                let target = clean_components(&target_raw).ok_or_else(bad)?;
                let (target_name, target_parents) = target.split_last().ok_or_else(bad)?;
                let target_parent =
                    open_beneath(&root, target_parents, false, &target_shown).map_err(|_| bad())?;
                remove_existing(parent, name, &shown, false)?;
                linkat(
                    Some(target_parent.as_raw_fd()),
                    target_name.as_os_str(),
                    Some(parent.as_raw_fd()),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|_| bad())?;
            }
            EntryType::Fifo => {
                remove_existing(parent, name, &shown, false)?;
                mknodat(
                    Some(parent.as_raw_fd()),
                    name.as_os_str(),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(mode),
                    0,
                )
                .map_err(|e| write_err(&shown, e))?;
            }
            EntryType::Char | EntryType::Block => {
                tracing::warn!(entry = %shown, "skipping device node in image layer");
                report.devices_skipped += 1;
                continue;
            }
            _ => continue,
        }
        report.entries += 1;
    }
    // Directory modes last, deepest first, so a read-only directory does not
    // stop its own contents from being written.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components.len()));
    for dir in dirs {
        let shown = PathBuf::from_iter(&dir.components).display().to_string();
        let fd = open_beneath(&root, &dir.components, false, &shown)?;
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(dir.mode))
            .map_err(|e| write_err(&shown, e))?;
        let t = TimeSpec::new(dir.mtime, 0);
        nix::sys::stat::futimens(fd.as_raw_fd(), &t, &t).map_err(|e| write_err(&shown, e))?;
    }
    Ok(report)
}

/// The target of a symlink or hardlink entry.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, shown: &str) -> Result<Vec<u8>, UnpackError> {
    entry
        .link_name_bytes()
        .map(|t| t.into_owned())
        .ok_or_else(|| UnpackError::Tar(io::Error::other(format!("link {shown:?} has no target"))))
}

/// Splits a tar path into clean components: `.` and empty parts dropped, a
/// leading `/` neutralised, `..` refused (None).
pub fn clean_components(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    const USER: UnpackOptions = UnpackOptions {
        privileged: false,
        allow_setuid: false,
        max_depth: DEFAULT_MAX_DEPTH,
        max_bytes: u64::MAX,
    };

    /// A tar with raw entries: (type, name, link target, data, mode).
    fn tar_of(entries: &[(tar::EntryType, &str, &str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (kind, name, link, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack(
        entries: &[(tar::EntryType, &str, &str, &[u8], u32)],
    ) -> (tempfile::TempDir, Result<UnpackReport, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack_layer(&tar_of(entries)[..], dir.path(), USER);
        (dir, result)
    }

    use tar::EntryType::{Char, Directory as Dir, Link, Regular as File, Symlink};

    #[test]
    #[allow(unsafe_code)]
    fn whiteouts_and_opaque_markers_become_overlay_format() {
        let (dir, r) = unpack(&[
            (Dir, "etc", "", b"", 0o755),
            (File, "etc/.wh.passwd", "", b"", 0o644),
            (Dir, "data", "", b"", 0o755),
            (File, "data/.wh..wh..opq", "", b"", 0o644),
        ]);
        assert_eq!(r.unwrap().whiteouts, 1);
        let meta = std::fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
        let value = std::fs::read_dir(dir.path().join("data")).unwrap().count();
        assert_eq!(value, 0, "the marker itself is not written");
        let mut buf = [0u8; 4];
        let path = std::ffi::CString::new(dir.path().join("data").to_str().unwrap()).unwrap();
        // SAFETY: valid path and buffer; only reads the xattr.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(&buf[..n as usize], b"y");
    }

    #[test]
    fn dotdot_refused_leading_slash_kept_inside() {
        let (_, r) = unpack(&[(File, "../escape", "", b"x", 0o644)]);
        assert!(matches!(r, Err(UnpackError::PathEscape { .. })));
        let (dir, r) = unpack(&[(File, "/abs/file", "", b"x", 0o644)]);
        r.unwrap();
        assert_eq!(std::fs::read(dir.path().join("abs/file")).unwrap(), b"x");
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let (_, r) = unpack(&[
            (
                Symlink,
                "evil",
                outside.path().to_str().unwrap(),
                b"",
                0o777,
            ),
            (File, "evil/pwned", "", b"x", 0o644),
        ]);
        assert!(
            matches!(r, Err(UnpackError::ThroughSymlink { .. })),
            "{r:?}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn hardlinks_stay_inside_the_layer() {
        let (dir, r) = unpack(&[
            (File, "a", "", b"data", 0o644),
            (Link, "b", "a", b"", 0o644),
        ]);
        r.unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("b")).unwrap().ino(),
            std::fs::metadata(dir.path().join("a")).unwrap().ino()
        );
        for target in ["../../etc/passwd", "/etc/passwd", "missing"] {
            let (_, r) = unpack(&[(Link, "b", target, b"", 0o644)]);
            assert!(
                matches!(r, Err(UnpackError::BadHardlink { .. })),
                "{target}: {r:?}"
            );
        }
    }

    #[test]
    fn devices_skipped_and_setuid_cleared() {
        let (dir, r) = unpack(&[
            (Char, "mem", "", b"", 0o666),
            (File, "suid", "", b"#!", 0o4755),
        ]);
        let report = r.unwrap();
        assert_eq!((report.devices_skipped, report.setid_cleared), (1, 1));
        assert!(!dir.path().join("mem").exists());
        assert_eq!(
            std::fs::metadata(dir.path().join("suid"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755
        );
    }

    #[test]
    fn read_only_directories_get_their_mode_after_their_contents() {
        // Without the capabilities that let root write into a 0555
        // directory (this thread's only), as an ordinary user unpacks.
        use caps::{CapSet, Capability};
        let overrides = [Capability::CAP_DAC_OVERRIDE, Capability::CAP_FOWNER];
        let held: Vec<Capability> = overrides
            .into_iter()
            .filter(|c| caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false))
            .collect();
        for cap in &held {
            caps::drop(None, CapSet::Effective, *cap).unwrap();
        }
        let (dir, r) = unpack(&[(Dir, "ro", "", b"", 0o555), (File, "ro/f", "", b"x", 0o444)]);
        for cap in &held {
            caps::raise(None, CapSet::Effective, *cap).unwrap();
        }
        r.unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("ro"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o555
        );
        std::fs::set_permissions(
            dir.path().join("ro"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn a_file_may_not_replace_a_directory() {
        let (_, r) = unpack(&[(Dir, "d", "", b"", 0o755), (File, "d", "", b"x", 0o644)]);
        assert!(matches!(r, Err(UnpackError::ReplacesDirectory { .. })));
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let mut data = tar_of(&[(File, "big", "", &[7u8; 4096], 0o644)]);
        data.truncate(1024);
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack_layer(&data[..], dir.path(), USER),
            Err(UnpackError::Tar(_))
        ));
    }

    #[test]
    fn dotdot_is_refused_and_leading_slash_neutralised() {
        assert!(clean_components(b"a/../../etc/passwd").is_none());
        assert_eq!(
            clean_components(b"/etc//./passwd").unwrap(),
            vec![OsString::from("etc"), OsString::from("passwd")]
        );
        assert!(clean_components(b"./").unwrap().is_empty());
    }
}
