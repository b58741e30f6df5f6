//! Which uid/gid maps the container's user namespaces get, worked out as data.
//!
//! berth runs every container in a user namespace, built in one of two ways:
//!
//! - **berth as root**: mounts are made by real root in the initial user
//!   namespace (so overlayfs sees layer ownership as it is, and the mount
//!   namespace stays owned by the host: nothing in the container can unmount
//!   the masks). Then the container's init enters a new user namespace whose
//!   maps berth writes from outside: the full identity map, or, with
//!   remap-root, container root mapped to the user.
//! - **berth as a user** (rootless): an outer user namespace maps the user to
//!   root so the mounts can be made; then an inner user namespace, mapped by
//!   the init itself, gives the command the user's own uid (or root with
//!   remap-root). The mount namespace belongs to the outer namespace, so the
//!   command cannot unmount anything either.

use crate::spec::Identity;

/// One line of a uid_map or gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id in the parent namespace.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The maps of one user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNsMaps {
    /// uid_map lines.
    pub uids: Vec<IdRange>,
    /// gid_map lines.
    pub gids: Vec<IdRange>,
    /// Whether setgroups(2) stays allowed (only when the writer is privileged).
    pub allow_setgroups: bool,
}

impl UserNsMaps {
    fn single(uid_in: u32, uid_out: u32, gid_in: u32, gid_out: u32) -> UserNsMaps {
        UserNsMaps {
            uids: vec![IdRange {
                inside: uid_in,
                outside: uid_out,
                count: 1,
            }],
            gids: vec![IdRange {
                inside: gid_in,
                outside: gid_out,
                count: 1,
            }],
            allow_setgroups: false,
        }
    }

    /// Root inside mapped to `uid`/`gid` outside, setgroups denied: the
    /// single-id map any user may write for a namespace of its own.
    pub fn root_as(uid: u32, gid: u32) -> UserNsMaps {
        UserNsMaps::single(0, uid, 0, gid)
    }

    /// Writes the maps of the process whose /proc directory is `proc_dir`
    /// (`/proc/self`, `/proc/PID`): `setgroups` first when it is denied.
    pub fn write_to(&self, proc_dir: &std::path::Path) -> std::io::Result<()> {
        let write = |file: &str, text: &str| {
            std::fs::write(proc_dir.join(file), text).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot write {file} {:?}: {e}", text.trim()),
                )
            })
        };
        if !self.allow_setgroups {
            write("setgroups", "deny")?;
        }
        write("uid_map", &self.uid_map_text())?;
        write("gid_map", &self.gid_map_text())
    }

    /// The text written to `/proc/PID/uid_map`.
    pub fn uid_map_text(&self) -> String {
        map_text(&self.uids)
    }

    /// The text written to `/proc/PID/gid_map`.
    pub fn gid_map_text(&self) -> String {
        map_text(&self.gids)
    }
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// The whole plan: an optional outer namespace (rootless only), written by
/// berth from outside, and the container's own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapPlan {
    /// Maps of the namespace the mounts are made in (rootless), written by berth.
    pub outer: Option<UserNsMaps>,
    /// Maps of the container's namespace.
    pub inner: UserNsMaps,
    /// Whether berth (outside) writes the inner maps; otherwise init writes its own.
    pub inner_written_by_parent: bool,
}

/// Works out the maps for `identity`.
pub fn plan(identity: &Identity) -> MapPlan {
    let (uid, gid) = (identity.host_uid, identity.host_gid);
    if identity.privileged {
        let inner = if identity.remap_root {
            // setgroups denied: the container's root keeps the user's
            // supplementary groups (set before the namespace was made) and
            // cannot drop one to get past a "deny by group" permission.
            UserNsMaps {
                allow_setgroups: false,
                ..UserNsMaps::single(0, uid, 0, gid)
            }
        } else {
            let all = IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            };
            UserNsMaps {
                uids: vec![all],
                gids: vec![all],
                allow_setgroups: true,
            }
        };
        MapPlan {
            outer: None,
            inner,
            inner_written_by_parent: true,
        }
    } else {
        let outer = UserNsMaps::single(0, uid, 0, gid);
        // Inside the outer namespace the user is 0.
        let inner = UserNsMaps::single(identity.container_uid(), 0, identity.container_gid(), 0);
        MapPlan {
            outer: Some(outer),
            inner,
            inner_written_by_parent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(privileged: bool, remap_root: bool) -> Identity {
        Identity {
            host_uid: 1000,
            host_gid: 100,
            host_groups: vec![27],
            remap_root,
            privileged,
        }
    }

    #[test]
    fn root_without_remap_maps_identity() {
        let p = plan(&id(true, false));
        assert_eq!(p.outer, None);
        assert_eq!(p.inner.uid_map_text(), "0 0 4294967295\n");
        assert!(p.inner.allow_setgroups);
        assert!(p.inner_written_by_parent);
    }

    #[test]
    fn root_with_remap_maps_user_to_zero() {
        let p = plan(&id(true, true));
        assert_eq!(p.inner.uid_map_text(), "0 1000 1\n");
        assert_eq!(p.inner.gid_map_text(), "0 100 1\n");
        assert!(!p.inner.allow_setgroups, "groups could be dropped");
    }

    #[test]
    fn rootless_nests_two_single_maps() {
        let p = plan(&id(false, false));
        let outer = p.outer.unwrap();
        assert_eq!(outer.uid_map_text(), "0 1000 1\n");
        assert!(!outer.allow_setgroups);
        assert_eq!(p.inner.uid_map_text(), "1000 0 1\n");
        assert_eq!(p.inner.gid_map_text(), "100 0 1\n");
        assert!(!p.inner_written_by_parent);
        let p = plan(&id(false, true));
        assert_eq!(p.inner.uid_map_text(), "0 0 1\n");
    }
}
