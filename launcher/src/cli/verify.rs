//! `berth verify` (root): proves a user's container is isolated, the five
//! checks of the seeds' `verify_isolation.sh`, against the live
//! configuration and the real kernel. It starts the container `berth run
//! --user U [--gpus] [-m] IMAGE` would, runs a static probe in it as the
//! user (`launcher/probe/main.rs`, bound in read-only), and checks what the
//! probe saw:
//!
//! 1. **user mapping**: the container runs as the user, never as the
//!    host's root;
//! 2. **filesystem**: system directories cannot be written, the node's
//!    berth store, config and root's home are not there;
//! 3. **GPUs**: exactly the GPUs given are there (by device number), none
//!    reserved and none granted to another named user;
//! 4. **privileges**: no capabilities, no_new_privs, a seccomp filter;
//! 5. **other users**: each `--other` user's home cannot be read and their
//!    processes cannot be seen.
//!
//! A table (colour on a terminal) or `--json`; the exit status is 1 when a
//! check fails, each failure naming what to fix.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use berth::process;
use berth::spec::build::{build_spec, Built, ContainerRequest, Purpose};

use super::Context;

/// The probe, built static by build.rs.
static PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-verify-probe"));

/// Where the probe is in the container.
const PROBE_IN_CONTAINER: &str = "/.berth-verify-probe";

/// System directories a user must not write to.
const SYSTEM_DIRS: [&str; 4] = ["/usr", "/etc", "/bin", "/"];

#[derive(clap::Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The user whose container is checked: a name or a uid.
    #[arg(long, value_name = "USER")]
    user: String,
    /// The GPUs their container gets (as `berth run --gpus`).
    #[arg(long, value_name = "LIST")]
    gpus: Option<String>,
    /// Bind mounts their container gets (as `berth run -m`): SRC:DST[:ro].
    #[arg(short = 'm', long = "mount", value_name = "SRC:DST[:ro]")]
    mounts: Vec<String>,
    /// Another user who must not reach this one's container (repeatable).
    #[arg(long = "other", value_name = "USER")]
    others: Vec<String>,
    /// A host path that must not be in the container (repeatable).
    #[arg(long = "hidden", value_name = "PATH")]
    hidden: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The image to check with.
    image: String,
}

/// One check's outcome.
#[derive(Serialize, Debug)]
struct Check {
    name: &'static str,
    passed: bool,
    /// What was seen (passed) or what is wrong and what to fix (failed).
    details: Vec<String>,
}

/// What the probe printed, by kind.
type Seen = BTreeMap<String, Vec<Vec<String>>>;

pub(crate) fn verify(ctx: &Context, args: &VerifyArgs) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("berth verify starts containers for other users: run it as root");
    }
    let user = lookup(&args.user)?;
    let others = args
        .others
        .iter()
        .map(|o| lookup(o))
        .collect::<Result<Vec<_>>>()?;
    let hidden: Vec<PathBuf> = [
        ctx.store.root().to_path_buf(),
        PathBuf::from("/etc/berth"),
        PathBuf::from("/root"),
    ]
    .into_iter()
    .chain(args.hidden.iter().cloned())
    .collect();
    // Host directories are told apart from the image's by a file of
    // root's put in each for the run: the container may have its own
    // /root, but never this file.
    let token = token()?;
    let markers = Markers::place(&token, hidden.iter().chain(others.iter().map(|o| &o.dir)));
    let (seen, built) = run_probe(ctx, args, &user, &token)?;
    let checks = vec![
        user_mapping(&seen, &user),
        filesystem(&seen, &token, &hidden, &markers),
        gpus(ctx, &seen, &built, &user, &others),
        privileges(&seen),
        other_users(&seen, &others, &markers),
    ];
    drop(markers);
    report(&checks, args.json)?;
    Ok(if checks.iter().all(|c| c.passed) {
        0
    } else {
        1
    })
}

/// A fresh random name part.
fn token() -> Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The files put in host directories for a run, removed when dropped.
struct Markers(BTreeMap<PathBuf, PathBuf>);

impl Markers {
    /// A marker in each of `dirs` that is a directory (made new: a name
    /// that exists is not taken over).
    fn place<'a>(token: &str, dirs: impl Iterator<Item = &'a PathBuf>) -> Markers {
        use std::os::unix::fs::OpenOptionsExt;
        let mut placed = BTreeMap::new();
        for (i, dir) in dirs.filter(|d| d.is_dir()).enumerate() {
            let marker = dir.join(format!(".berth-verify-{token}-{i}"));
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&marker);
            if made.is_ok() {
                placed.insert(dir.clone(), marker);
            }
        }
        Markers(placed)
    }

    /// The name of `dir`'s marker.
    fn of(&self, dir: &Path) -> Option<String> {
        self.0
            .get(dir)
            .and_then(|m| m.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        for marker in self.0.values() {
            let _ = std::fs::remove_file(marker);
        }
    }
}

/// A user by name or uid.
fn lookup(who: &str) -> Result<nix::unistd::User> {
    let found = match who.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(who),
    };
    found
        .ok()
        .flatten()
        .with_context(|| format!("no user {who:?} on this host"))
}

/// Starts the user's container with the probe and returns what it saw.
fn run_probe(
    ctx: &Context,
    args: &VerifyArgs,
    user: &nix::unistd::User,
    token: &str,
) -> Result<(Seen, Built)> {
    // The probe in a directory of root's that the user may read (it is
    // opened with their rights, as every mount source is).
    let dir = std::env::temp_dir().join(format!("berth-verify-{token}"));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cleanup = Cleanup(dir.clone());
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let probe = dir.join("probe");
    std::fs::write(&probe, PROBE)?;
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let mut command = vec![
        PROBE_IN_CONTAINER.to_string(),
        "--token".into(),
        token.to_string(),
        "--write".into(),
    ];
    command.extend(SYSTEM_DIRS.iter().map(|d| d.to_string()));
    // Every marker the container holds, wherever it was mounted.
    command.push("--find".into());
    command.push(format!(".berth-verify-{token}-"));
    let request = ContainerRequest {
        image: args.image.clone(),
        command,
        mounts: args.mounts.clone(),
        gpus: args.gpus.clone(),
        user: Some(format!("{}:{}", user.uid, user.gid)),
        ..Default::default()
    };
    let purpose = Purpose {
        needs_command: true,
        cgroup_path: Some(format!(
            "{}/verify-{}",
            ctx.config.limits.cgroup_parent,
            std::process::id()
        )),
        slurm_mounts: vec![format!("{}:{PROBE_IN_CONTAINER}:ro", probe.display())],
        ..Default::default()
    };
    let built = build_spec(&ctx.build_context(), ctx, &request, &purpose)?;
    // The probe writes to berth's standard output: a memfd meanwhile.
    let capture =
        nix::sys::memfd::memfd_create(c"berth-verify", nix::sys::memfd::MemFdCreateFlag::empty())?;
    use std::os::fd::{AsFd, AsRawFd};
    let saved = std::io::stdout().as_fd().try_clone_to_owned()?;
    std::io::stdout().flush()?;
    nix::unistd::dup2(capture.as_raw_fd(), 1)?;
    let ran = process::run(&built.spec, None);
    nix::unistd::dup2(saved.as_raw_fd(), 1)?;
    let exit = ran?;
    let mut text = String::new();
    let mut file = std::fs::File::from(capture);
    file.rewind()?;
    file.read_to_string(&mut text)?;
    drop(cleanup);
    if exit.code != 0 {
        bail!(
            "the probe failed in the container (exit {}): {text}",
            exit.code
        );
    }
    let mut seen = Seen::new();
    for line in text.lines() {
        let mut fields = line.split('\t').map(String::from);
        if let Some(kind) = fields.next() {
            seen.entry(kind).or_default().push(fields.collect());
        }
    }
    Ok((seen, built))
}

/// Removes the probe's directory when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The probe's lines of `kind` whose first field is `key`: the rest.
fn value<'a>(seen: &'a Seen, kind: &str, key: &str) -> Option<&'a [String]> {
    seen.get(kind)?
        .iter()
        .find(|f| f.first().map(String::as_str) == Some(key))
        .map(|f| &f[1..])
}

fn user_mapping(seen: &Seen, user: &nix::unistd::User) -> Check {
    let id = seen
        .get("id")
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default();
    let uid: Option<u32> = id.first().and_then(|u| u.parse().ok());
    let map = value(seen, "map", "uid")
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default();
    let mut details = vec![format!("uid inside: {}, uid_map: {map}", id.join(":"))];
    let passed = uid == Some(user.uid.as_raw()) && uid != Some(0);
    if !passed {
        details.push(format!(
            "the container must run as {} (uid {}), not {:?}: check [security] and the identity berth gives the container",
            user.name, user.uid, uid
        ));
    }
    Check {
        name: "user mapping",
        passed,
        details,
    }
}

fn filesystem(seen: &Seen, token: &str, hidden: &[PathBuf], markers: &Markers) -> Check {
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
        let on_host = Path::new(dir).join(format!(".berth-verify-{token}"));
        if std::fs::symlink_metadata(&on_host).is_ok() {
            let _ = std::fs::remove_file(&on_host);
            passed = false;
            details.push(format!("a file the user wrote in the container's {dir} appeared in the host's {dir}: the host's {dir} is mounted into the container; remove that mount"));
        } else {
            let what = if wrote == "ok" {
                "the container's own copy".to_string()
            } else {
                format!("not writable ({wrote})")
            };
            details.push(format!("{dir}: {what}; the host's untouched"));
        }
    }
    for path in hidden {
        let shown = path.display().to_string();
        let Some(marker) = markers.of(path) else {
            details.push(format!(
                "{shown}: not a directory on this host, not checked"
            ));
            continue;
        };
        if let Some(found) = value(seen, "found", &marker) {
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
            passed = false;
            details.push(format!(
                "host directory {shown} is in the container at {at}: remove the mount that brings it"
            ));
        } else {
            details.push(format!("{shown}: not in the container"));
        }
    }
    Check {
        name: "filesystem",
        passed,
        details,
    }
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

fn gpus(
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

fn privileges(seen: &Seen) -> Check {
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

fn other_users(seen: &Seen, others: &[nix::unistd::User], markers: &Markers) -> Check {
    let mut details = vec![];
    let mut passed = true;
    for other in others {
        let home = other.dir.display().to_string();
        let Some(marker) = markers.of(&other.dir) else {
            details.push(format!(
                "{}'s home {home}: not a directory here, not checked",
                other.name
            ));
            continue;
        };
        let read = value(seen, "found", &marker)
            .and_then(|v| v.get(1))
            .cloned()
            .unwrap_or_else(|| "not in the container".into());
        if read == "ok" {
            passed = false;
            details.push(format!(
                "{}'s home {home} can be read from the container: make it 0700 or drop the mount that brings it",
                other.name
            ));
        } else {
            details.push(format!(
                "{}'s home {home}: cannot be read ({read})",
                other.name
            ));
        }
    }
    if others.is_empty() {
        details.push("no --other user named: nothing to compare".into());
    }
    // The container has a pid namespace of its own: no host process, the
    // other users' included, is in its /proc.
    details.push("processes: the container has its own pid namespace".into());
    Check {
        name: "other users",
        passed,
        details,
    }
}

fn report(checks: &[Check], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(checks)?)?;
        return Ok(());
    }
    let colour = std::io::stdout().is_terminal();
    let mark = |passed: bool| match (passed, colour) {
        (true, true) => "\x1b[32mPASS\x1b[0m",
        (false, true) => "\x1b[31mFAIL\x1b[0m",
        (true, false) => "PASS",
        (false, false) => "FAIL",
    };
    for check in checks {
        writeln!(out, "{}  {}", mark(check.passed), check.name)?;
        for line in &check.details {
            writeln!(out, "      {line}")?;
        }
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    writeln!(
        out,
        "{}",
        match failed {
            0 => "all checks passed".to_string(),
            n => format!("{n} of {} checks failed", checks.len()),
        }
    )?;
    Ok(())
}
