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
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use berth::process;
use berth::spec::build::{build_spec, Built, ContainerRequest, Purpose};

use super::Context;

mod checks;
use checks::{filesystem, gpus, other_users, privileges, user_mapping};

/// The probe, built static by build.rs.
static PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-verify-probe"));

/// Where the probe is in the container.
const PROBE_IN_CONTAINER: &str = "/.berth-verify-probe";

/// System directories a user must not write to.
pub(super) const SYSTEM_DIRS: [&str; 4] = ["/usr", "/etc", "/bin", "/"];

#[derive(clap::Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The user whose container is checked: a name or a uid [default:
    /// each of `[login] users`, with `[login]`'s image and mounts and the
    /// GPUs `[gpus.users]` grants them, the others as --other].
    #[arg(long, value_name = "USER")]
    user: Option<String>,
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
    /// The image to check with [default: `[login] image`].
    image: Option<String>,
}

/// One container to check.
struct Subject {
    user: nix::unistd::User,
    others: Vec<nix::unistd::User>,
    image: String,
    /// The user's own (`-m`: berth.toml's [mounts] policy applies).
    mounts: Vec<String>,
    /// The admin's (a `[login]` container's: opened with the user's rights).
    admin_mounts: Vec<String>,
    gpus: Option<String>,
}

/// One check's outcome.
#[derive(Serialize, Debug)]
pub(super) struct Check {
    pub(super) name: &'static str,
    pub(super) passed: bool,
    /// What was seen (passed) or what is wrong and what to fix (failed).
    pub(super) details: Vec<String>,
}

/// What the probe printed, by kind.
pub(super) type Seen = BTreeMap<String, Vec<Vec<String>>>;

pub(crate) fn verify(ctx: &Context, args: &VerifyArgs) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("berth verify starts containers for other users: run it as root");
    }
    let others = args
        .others
        .iter()
        .map(|o| lookup(o))
        .collect::<Result<Vec<_>>>()?;
    // One user as asked, or every [login] user as configured.
    let subjects: Vec<Result<Subject, (String, String)>> = match &args.user {
        Some(user) => vec![Ok(Subject {
            user: lookup(user)?,
            others,
            image: args.image.clone().context("give the image to check with")?,
            mounts: args.mounts.clone(),
            admin_mounts: vec![],
            gpus: args.gpus.clone(),
        })],
        None => login_subjects(ctx, args, &others)?,
    };
    let mut reports = vec![];
    for subject in subjects {
        let (name, checks) = match subject {
            Ok(subject) => (subject.user.name.clone(), verify_one(ctx, args, &subject)?),
            // A user whose configured mounts cannot be used: one failed check.
            Err((name, why)) => (
                name,
                vec![Check {
                    name: "login mounts",
                    passed: false,
                    details: vec![why],
                }],
            ),
        };
        reports.push((name, checks));
    }
    report(&reports, args.json)?;
    Ok(if reports.iter().all(|(_, c)| c.iter().all(|c| c.passed)) {
        0
    } else {
        1
    })
}

/// Every `[login]` user's container as configured (or why its mounts
/// cannot be used), each with the other login users as `--other`.
fn login_subjects(
    ctx: &Context,
    args: &VerifyArgs,
    others: &[nix::unistd::User],
) -> Result<Vec<Result<Subject, (String, String)>>> {
    let login = &ctx.config.login;
    if login.users.is_empty() {
        bail!("no --user given and no [login] users in berth.toml: nothing to verify");
    }
    let users = berth::login::users(login)?;
    Ok(users
        .iter()
        .map(|user| {
            let plan = berth::login::LoginPlan::of(&ctx.config, user)
                .map_err(|e| (user.name.clone(), e.to_string()))?;
            Ok(Subject {
                user: user.clone(),
                others: users
                    .iter()
                    .filter(|o| o.uid != user.uid)
                    .chain(others)
                    .cloned()
                    .collect(),
                image: args.image.clone().unwrap_or(plan.image),
                mounts: vec![],
                admin_mounts: plan.mounts,
                gpus: plan.gpus,
            })
        })
        .collect())
}

/// The five checks of one user's container.
fn verify_one(ctx: &Context, args: &VerifyArgs, subject: &Subject) -> Result<Vec<Check>> {
    let (user, others) = (&subject.user, &subject.others);
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
    // The probe's directory first: the markers' names (seen by the users
    // whose homes take one) give the token away.
    let probe = ProbeFile::write(&token)?;
    let markers = Markers::place(&token, hidden.iter().chain(others.iter().map(|o| &o.dir)));
    let system_dir_probes = SystemDirProbes(token.clone());
    let (seen, built) = run_probe(ctx, subject, &token, &probe, &markers)?;
    Ok(vec![
        user_mapping(&seen, user),
        filesystem(&seen, &system_dir_probes, &hidden, &markers),
        gpus(ctx, &seen, &built, user, others),
        privileges(&seen),
        other_users(&seen, others, &markers),
    ])
}

/// A fresh random name part.
fn token() -> Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The files put in host directories for a run (or why one could not
/// be), removed when dropped.
pub(super) struct Markers(BTreeMap<PathBuf, Result<PathBuf, String>>);

impl Markers {
    /// A marker in each of `dirs` that exists (made new: a name that
    /// exists is not taken over); a directory that cannot take one cannot
    /// be checked, and says why.
    fn place<'a>(token: &str, dirs: impl Iterator<Item = &'a PathBuf>) -> Markers {
        use std::os::unix::fs::OpenOptionsExt;
        let mut placed = BTreeMap::new();
        for dir in dirs.filter(|d| d.exists()) {
            if placed.contains_key(dir) {
                continue;
            }
            let marker = dir.join(format!(".berth-verify-{token}-{}", placed.len()));
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&marker)
                .map(|_| marker)
                .map_err(|e| e.to_string());
            placed.insert(dir.clone(), made);
        }
        Markers(placed)
    }

    /// The name of `dir`'s marker; None if it does not exist; an error if
    /// no marker could be put there.
    pub(super) fn of(&self, dir: &Path) -> Option<Result<String, String>> {
        let placed = self.0.get(dir)?;
        Some(placed.as_ref().map_err(Clone::clone).map(|m| {
            m.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }))
    }

    /// The markers placed, for the probe to look for at their own paths.
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.0.values().filter_map(|m| m.as_ref().ok())
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        for marker in self.paths() {
            let _ = std::fs::remove_file(marker);
        }
    }
}

/// The files the probe wrote in the container's system directories, if
/// they reached the host's: removed however the run ends.
pub(super) struct SystemDirProbes(String);

impl SystemDirProbes {
    pub(super) fn path(&self, dir: &str) -> PathBuf {
        Path::new(dir).join(format!(".berth-verify-{}", self.0))
    }
}

impl Drop for SystemDirProbes {
    fn drop(&mut self) {
        for dir in SYSTEM_DIRS {
            let path = self.path(dir);
            if std::fs::symlink_metadata(&path).is_ok() {
                let _ = std::fs::remove_file(path);
            }
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

/// The probe on the host, in a directory of root's that the user may read
/// (it is opened with their rights, as every mount source is); removed
/// when dropped.
struct ProbeFile(PathBuf);

impl ProbeFile {
    fn write(token: &str) -> Result<ProbeFile> {
        let dir = std::env::temp_dir().join(format!("berth-verify-{token}"));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let made = ProbeFile(dir.clone());
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::fs::write(made.path(), PROBE)?;
        std::fs::set_permissions(
            made.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(made)
    }

    fn path(&self) -> PathBuf {
        self.0.join("probe")
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the user's container with the probe and returns what it saw.
fn run_probe(
    ctx: &Context,
    subject: &Subject,
    token: &str,
    probe: &ProbeFile,
    markers: &Markers,
) -> Result<(Seen, Built)> {
    let probe = probe.path();

    let mut command = vec![
        PROBE_IN_CONTAINER.to_string(),
        "--token".into(),
        token.to_string(),
        "--write".into(),
    ];
    command.extend(SYSTEM_DIRS.iter().map(|d| d.to_string()));
    // Every marker the container holds, wherever it was mounted, and at
    // its own path (a directory the user may enter but not list).
    command.push("--find".into());
    command.push(format!(".berth-verify-{token}-"));
    command.push("--open".into());
    command.extend(markers.paths().map(|m| m.display().to_string()));
    let request = ContainerRequest {
        image: subject.image.clone(),
        command,
        mounts: subject.mounts.clone(),
        gpus: subject.gpus.clone(),
        user: Some(format!("{}:{}", subject.user.uid, subject.user.gid)),
        ..Default::default()
    };
    let purpose = Purpose {
        needs_command: true,
        cgroup_path: Some(format!(
            "{}/verify-{}",
            ctx.config.limits.cgroup_parent,
            std::process::id()
        )),
        slurm_mounts: subject
            .admin_mounts
            .iter()
            .cloned()
            .chain([format!("{}:{PROBE_IN_CONTAINER}:ro", probe.display())])
            .collect(),
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

/// Prints each user's checks: a table per user, or one JSON object
/// (user name -> checks).
fn report(reports: &[(String, Vec<Check>)], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let object: BTreeMap<&str, &Vec<Check>> =
            reports.iter().map(|(u, c)| (u.as_str(), c)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&object)?)?;
        return Ok(());
    }
    let colour = std::io::stdout().is_terminal();
    let mark = |passed: bool| match (passed, colour) {
        (true, true) => "\x1b[32mPASS\x1b[0m",
        (false, true) => "\x1b[31mFAIL\x1b[0m",
        (true, false) => "PASS",
        (false, false) => "FAIL",
    };
    for (user, checks) in reports {
        if reports.len() > 1 {
            writeln!(out, "== {user}")?;
        }
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
                0 => format!("{user}: all checks passed"),
                n => format!("{user}: {n} of {} checks failed", checks.len()),
            }
        )?;
    }
    Ok(())
}
