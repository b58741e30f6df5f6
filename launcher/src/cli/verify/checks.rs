//! The five checks, from what the probe saw (see `verify.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth::spec::build::Built;

use super::{Check, Context, Markers, Seen, SystemDirProbes, SYSTEM_DIRS};

/// The probe's lines of `kind` whose first field is `key`: the rest.
pub(super) fn value<'a>(seen: &'a Seen, kind: &str, key: &str) -> Option<&'a [String]> {
    seen.get(kind)?
        .iter()
        .find(|f| f.first().map(String::as_str) == Some(key))
        .map(|f| &f[1..])
}

/// The host id `inside` maps to, from a `/proc/PID/{uid,gid}_map` text
/// (lines `INSIDE OUTSIDE COUNT`, here joined by `;`).
fn host_id(map: &str, inside: u32) -> Option<u32> {
    map.split(';').find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let (first, outside, count) = (*f.first()?, *f.get(1)?, *f.get(2)?);
        let inside = u64::from(inside);
        (first <= inside && inside < first + count).then(|| (outside + inside - first) as u32)
    })
}

pub(super) fn user_mapping(seen: &Seen, user: &nix::unistd::User) -> Check {
    let id = seen
        .get("id")
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default();
    let inside = |i: usize| id.get(i).and_then(|n| n.parse::<u32>().ok());
    let map = |which: &str| {
        value(seen, "map", which)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    let (uid_map, gid_map) = (map("uid"), map("gid"));
    let host_uid = inside(0).and_then(|u| host_id(&uid_map, u));
    let host_gid = inside(1).and_then(|g| host_id(&gid_map, g));
    let mut details = vec![format!(
        "inside {}, on the host uid {host_uid:?} gid {host_gid:?} (uid_map {uid_map}; gid_map {gid_map})",
        id.join(":")
    )];
    let passed = host_uid == Some(user.uid.as_raw()) && host_gid == Some(user.gid.as_raw());
    if !passed {
        details.push(format!(
            "the container must run as {} (uid {}, gid {}) on the host, never as root: check the identity berth gives it",
            user.name, user.uid, user.gid
        ));
    }
    Check {
        name: "user mapping",
        passed,
        details,
    }
}

pub(super) fn filesystem(
    seen: &Seen,
    written: &SystemDirProbes,
    hidden: &[PathBuf],
    markers: &Markers,
) -> Check {
    let mut details = vec![];
    let mut passed = true;
    // The container's system directories are its own copies (the image's,
    // under its writable layer): what it writes there must not reach the
    // host's.
    for dir in SYSTEM_DIRS {
        let wrote = value(seen, "write", dir)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default();
        if std::fs::symlink_metadata(written.path(dir)).is_ok() {
            passed = false;
            details.push(format!("a file the user wrote in the container's {dir} appeared in the host's {dir}: the host's {dir} is mounted into the container; remove that mount"));
        } else {
            let what = match wrote.as_str() {
                "ok" => "the container's own copy".to_string(),
                _ => format!("not writable ({wrote})"),
            };
            details.push(format!("{dir}: {what}; the host's untouched"));
        }
    }
    for path in hidden {
        let shown = path.display().to_string();
        match markers.of(path) {
            None => details.push(format!("{shown}: not on this host")),
            Some(Err(why)) => {
                passed = false;
                details.push(format!(
                    "{shown}: cannot be checked (no marker could be put there: {why})"
                ));
            }
            Some(Ok(marker)) => match found_at(seen, &marker) {
                Some((at, _)) => {
                    passed = false;
                    details.push(format!(
                        "host directory {shown} is in the container at {at}: remove the mount that brings it"
                    ));
                }
                None => details.push(format!("{shown}: not in the container")),
            },
        }
    }
    Check {
        name: "filesystem",
        passed,
        details,
    }
}

/// Where the probe found the marker named `marker` (its directory in the
/// container) and whether it could read it.
fn found_at(seen: &Seen, marker: &str) -> Option<(String, String)> {
    let found = value(seen, "found", marker)?;
    let at = found
        .first()
        .map(|p| {
            Path::new(p)
                .parent()
                .unwrap_or(Path::new("/"))
                .display()
                .to_string()
        })
        .unwrap_or_default();
    Some((at, found.get(1).cloned().unwrap_or_default()))
}

/// The device numbers (major:minor) of host device files.
fn device_numbers<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<String> {
    let mut numbers: Vec<String> = paths
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| {
            let rdev = m.rdev();
            format!(
                "{}:{}",
                nix::sys::stat::major(rdev),
                nix::sys::stat::minor(rdev)
            )
        })
        .collect();
    numbers.sort();
    numbers
}

pub(super) fn gpus(
    ctx: &Context,
    seen: &Seen,
    built: &Built,
    user: &nix::unistd::User,
    others: &[nix::unistd::User],
) -> Check {
    let is_gpu = |name: &str| {
        name.strip_prefix("nvidia")
            .is_some_and(|n| n.parse::<u32>().is_ok())
    };
    let given = device_numbers(
        built
            .spec
            .devices
            .nodes
            .iter()
            .filter(|n| {
                n.path
                    .file_name()
                    .is_some_and(|f| is_gpu(&f.to_string_lossy()))
            })
            .map(|n| n.host.as_path()),
    );
    let mut present: Vec<String> = seen
        .get("dev")
        .into_iter()
        .flatten()
        .filter(|f| {
            f.first()
                .is_some_and(|n| n.trim_start_matches("nvidia").parse::<u32>().is_ok())
        })
        .filter_map(|f| f.get(1).cloned())
        .collect();
    present.sort();
    let mut details = vec![format!(
        "GPU device nodes in the container: {present:?} (given: {given:?})"
    )];
    let mut passed = present == given;
    if !passed {
        details.push(
            "the container holds GPUs it was not given: check [gpus] devices and the device filter"
                .into(),
        );
    }
    let gpus = &ctx.config.gpus;
    let mine: Vec<u32> = gpus.users.get(&user.name).cloned().unwrap_or_default();
    for gpu in &mine {
        if gpus.reserved.contains(gpu) {
            passed = false;
            details.push(format!("GPU {gpu} is reserved for the system but [gpus.users] grants it to {}: take it out of one", user.name));
        }
        for other in others {
            if gpus.users.get(&other.name).is_some_and(|g| g.contains(gpu)) {
                passed = false;
                details.push(format!(
                    "GPU {gpu} is granted to both {} and {} in [gpus.users]: give each user their own",
                    user.name, other.name
                ));
            }
        }
    }
    Check {
        name: "GPUs",
        passed,
        details,
    }
}

pub(super) fn privileges(seen: &Seen) -> Check {
    let status = |name: &str| {
        value(seen, "status", name)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    let (caps, nnp, seccomp) = (status("CapEff"), status("NoNewPrivs"), status("Seccomp"));
    let mut details = vec![format!(
        "CapEff {caps}, NoNewPrivs {nnp}, Seccomp {seccomp}"
    )];
    let mut passed = true;
    if !caps.trim_start_matches('0').is_empty() {
        passed = false;
        details.push(
            "the user holds capabilities in the container: check [security] capabilities".into(),
        );
    }
    if nnp != "1" {
        passed = false;
        details.push("no_new_privs is not set: setuid programs could raise privileges".into());
    }
    if seccomp != "2" {
        passed = false;
        details.push("no seccomp filter: check [security] seccomp".into());
    }
    Check {
        name: "privileges",
        passed,
        details,
    }
}

pub(super) fn other_users(seen: &Seen, others: &[nix::unistd::User], markers: &Markers) -> Check {
    let mut details = vec![];
    let mut passed = true;
    for other in others {
        let home = other.dir.display().to_string();
        match markers.of(&other.dir) {
            None => details.push(format!("{}'s home {home}: not on this host", other.name)),
            Some(Err(why)) => {
                passed = false;
                details.push(format!(
                    "{}'s home {home}: cannot be checked (no marker could be put there: {why}; a home on NFS with root_squash?)",
                    other.name
                ));
            }
            Some(Ok(marker)) => match found_at(seen, &marker) {
                Some((at, read)) if read == "ok" => {
                    passed = false;
                    details.push(format!(
                        "{}'s home {home} can be read from the container (at {at}): make it 0700 or drop the mount that brings it",
                        other.name
                    ));
                }
                Some((at, read)) => details.push(format!(
                    "{}'s home {home}: in the container at {at} but cannot be read ({read})",
                    other.name
                )),
                None => details.push(format!(
                    "{}'s home {home}: not in the container",
                    other.name
                )),
            },
        }
    }
    if others.is_empty() {
        details.push("no --other user named: nothing to compare".into());
    }
    Check {
        name: "other users",
        passed,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::host_id;

    #[test]
    fn ids_map_to_the_host() {
        assert_eq!(host_id("0 0 4294967295", 1001), Some(1001));
        assert_eq!(host_id("0 1001 1", 0), Some(1001));
        assert_eq!(host_id("0 1001 1;1 100000 65536", 5), Some(100004));
        assert_eq!(host_id("0 1001 1", 7), None);
    }
}
