//! The named container verbs (Slurm `container_scope=global`): `ps`,
//! `rm --container`, and the named half of `gc`. Root reads the store;
//! a user reads the summary root keeps for them in `store.summary_dir`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

use berth::image::gc::ContainersReport;
use berth::image::records::now;
use berth::slurm::named::{self, Listed, NamedContainers, NamedError};

use super::images::human;
use super::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct PsArgs {
    /// Print the containers as a JSON array.
    #[arg(long)]
    json: bool,
    /// Only this user's containers [default: everyone's for root, your own otherwise].
    #[arg(long, value_name = "NAME|UID")]
    user: Option<String>,
}

/// What a user who asks to remove a named container is told.
const RM_NEEDS_ROOT: &str = "removing a named container needs root on the node; \
     remove your own with a step on that node: srun -w NODE --container-name=NAME:remove true";

/// `berth ps`: the node's named containers.
pub(crate) fn ps(ctx: &Context, args: &PsArgs) -> Result<i32> {
    let (listed, as_of) = if ctx.privileged {
        let uid = args.user.as_deref().map(resolve_user).transpose()?;
        (NamedContainers::of(&ctx.store).list(uid), None)
    } else {
        let me = nix::unistd::getuid().as_raw();
        if let Some(user) = &args.user {
            if resolve_user(user)? != me {
                bail!("only root sees other users' named containers");
            }
        }
        match read_summary(&ctx.config.store.summary_dir, me)? {
            Some((listed, written)) => (listed, Some(written)),
            None => (Vec::new(), None),
        }
    };
    match show(&listed, args, ctx.privileged, as_of) {
        // `berth ps | head`: what was not read is no error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        shown => shown.map(|()| 0).context("cannot write the list"),
    }
}

fn show(
    listed: &[Listed],
    args: &PsArgs,
    privileged: bool,
    as_of: Option<u64>,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, listed)?;
        writeln!(out)
    } else if listed.is_empty() {
        writeln!(out, "{}", nothing_listed(privileged, args.user.as_deref()))
    } else {
        print_table(&mut out, listed, now())?;
        match as_of {
            Some(written) => writeln!(out, "(as of {})", age(now().saturating_sub(written))),
            None => Ok(()),
        }
    }
}

fn nothing_listed(privileged: bool, user: Option<&str>) -> String {
    match (privileged, user) {
        (false, _) => "no named containers of yours on this node".into(),
        (true, Some(user)) => format!("no named containers of {user} on this node"),
        (true, None) => "no named containers on this node".into(),
    }
}

/// The summary root left for `uid` and when it was written (seconds
/// since the epoch); None when there is none.
fn read_summary(dir: &Path, uid: u32) -> Result<Option<(Vec<Listed>, u64)>> {
    let path = named::summary_path(dir, uid);
    let file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        opened => opened.with_context(|| format!("cannot read {}", path.display()))?,
    };
    let written = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let listed = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some((listed, written)))
}

fn print_table(out: &mut impl Write, listed: &[Listed], now: u64) -> std::io::Result<()> {
    let header = [
        "NAME",
        "USER",
        "IMAGE",
        "SIZE",
        "LAST USED",
        "STATE",
        "LAST JOB",
    ];
    let rows: Vec<[String; 7]> = listed.iter().map(|l| row(l, now)).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut line = |cells: [&str; 7]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    line(header)?;
    for row in &rows {
        line(row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

/// One container's cells, in the header's order.
fn row(listed: &Listed, now: u64) -> [String; 7] {
    let record = &listed.record;
    [
        record.name.clone(),
        user_name(record.uid),
        record.image.name.clone(),
        format!(
            "{} / {}",
            human(listed.disk_bytes),
            human(record.size_limit)
        ),
        age(now.saturating_sub(record.last_used)),
        state(listed),
        record.last_job.map_or("-".into(), |job| job.to_string()),
    ]
}

fn state(listed: &Listed) -> String {
    match (listed.running, listed.steps.is_empty()) {
        (_, false) => format!("running (steps {})", listed.steps.join(", ")),
        (true, true) => "running".into(),
        (false, true) => "stopped".into(),
    }
}

/// How long ago, roughly: "40s ago", "3m ago", "5h ago", "2d ago".
fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

/// The user's name, else the number.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
}

/// A user given as a name or a uid.
fn resolve_user(text: &str) -> Result<u32> {
    if let Ok(uid) = text.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => bail!("no such user: {text}"),
        Err(e) => bail!("cannot look up user {text}: {e}"),
    }
}

/// `berth rm --container NAME --user USER` (root only): removes a named
/// container no step uses.
pub(crate) fn rm(ctx: &Context, name: &str, user: Option<&str>) -> Result<i32> {
    if !ctx.privileged {
        bail!(RM_NEEDS_ROOT);
    }
    let Some(user) = user else {
        bail!("say whose named container to remove: berth rm --container {name} --user NAME|UID");
    };
    let uid = resolve_user(user)?;
    if !named::valid_name(name) {
        return Err(NamedError::BadName(name.to_string()).into());
    }
    let containers = NamedContainers::of(&ctx.store);
    let missing = || {
        anyhow::anyhow!(
            "{user} has no named container {name:?} on this node (see berth ps --user {user})"
        )
    };
    if !containers.exists(uid, name) {
        return Err(missing());
    }
    let held = containers.lock(uid, name)?;
    if held.record().is_none() {
        return Err(missing());
    }
    held.remove()?;
    write_summary(ctx, &containers, uid);
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub(crate) struct StopArgs {
    /// The named container (a login user's is `login`).
    #[arg(long, value_name = "NAME", default_value = berth::login::container::CONTAINER_NAME)]
    container: String,
    /// Whose it is.
    #[arg(long, value_name = "NAME|UID")]
    user: String,
}

/// `berth stop --container NAME --user USER` (root only): stops a named
/// container now, with every session and step in it; its writable layer
/// stays (`berth rm` then resets it).
pub(crate) fn stop(ctx: &Context, args: &StopArgs) -> Result<i32> {
    if !ctx.privileged {
        bail!("stopping a container needs root on the node");
    }
    let (name, user) = (&args.container, &args.user);
    let uid = resolve_user(user)?;
    let containers = NamedContainers::of(&ctx.store);
    if !containers.exists(uid, name) {
        bail!("{user} has no named container {name:?} on this node (see berth ps --user {user})");
    }
    let held = containers.lock(uid, name)?;
    match held.stop() {
        None => println!("{user}'s container {name:?} was not running"),
        Some((base, ended)) => {
            if name == berth::login::container::CONTAINER_NAME {
                berth::login::container::container_ended(&ctx.config, &base, ended.oom_kills);
            } else {
                berth::audit::slurm_container_ended(
                    &ctx.config.audit,
                    &base,
                    None,
                    None,
                    ended.oom_kills,
                );
            }
            for (dir, e) in ended.cgroup_errors {
                tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
            }
        }
    }
    drop(held);
    write_summary(ctx, &containers, uid);
    Ok(0)
}

/// Refreshes `uid`'s summary; a failure is only told (the store is right).
fn write_summary(ctx: &Context, containers: &NamedContainers, uid: u32) {
    let dir = &ctx.config.store.summary_dir;
    if let Err(e) = containers.write_summary(uid, dir) {
        tracing::warn!(uid, dir = %dir.display(), error = %e, "cannot write the list of a user's named containers");
    }
}

/// `berth gc`'s first part, as root: removes the named containers unused
/// for `store.container_max_age`, then refreshes every user's summary.
/// None for a user's own store, which has none.
pub(crate) fn gc(ctx: &Context) -> Result<Option<ContainersReport>> {
    if !ctx.privileged {
        return Ok(None);
    }
    let max_age = slurm_conf::parse_duration(&ctx.config.store.container_max_age)
        .map_err(|e| anyhow::anyhow!("store.container_max_age: {e}"))?;
    let report = berth::image::gc::collect_containers(&ctx.store, max_age, now());
    for error in &report.errors {
        tracing::warn!("{error}");
    }
    let containers = NamedContainers::of(&ctx.store);
    for uid in containers.uids() {
        write_summary(ctx, &containers, uid);
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_rough() {
        assert_eq!(age(5), "5s ago");
        assert_eq!(age(3 * 60 + 5), "3m ago");
        assert_eq!(age(5 * 3600), "5h ago");
        assert_eq!(age(2 * 86400 + 7), "2d ago");
    }

    #[test]
    fn users_by_number_or_name() {
        assert_eq!(resolve_user("4321").unwrap(), 4321);
        assert_eq!(resolve_user("root").unwrap(), 0);
        assert!(resolve_user("no-such-user-here").is_err());
    }

    fn listed(running: bool, steps: &[&str]) -> Listed {
        let json = r#"{"name":"dev","uid":0,"image":{"name":"ubuntu:22.04","source":"registry",
            "id":"sha256:x","layers":[],"config":{},"created":1,"public":false},"created":1,
            "last_used":100,"last_job":12,"size_limit":1073741824,"disk_bytes":2048,
            "running":false,"steps":[]}"#;
        let mut listed: Listed = serde_json::from_str(json).unwrap();
        listed.running = running;
        listed.steps = steps.iter().map(|s| s.to_string()).collect();
        listed
    }

    #[test]
    fn a_row_says_what_berth_ps_shows() {
        let row = row(&listed(true, &["12.0", "13.1"]), 100 + 2 * 86400);
        assert_eq!(
            row,
            [
                "dev",
                "root",
                "ubuntu:22.04",
                "2.0 KiB / 1.0 GiB",
                "2d ago",
                "running (steps 12.0, 13.1)",
                "12"
            ]
        );
        assert_eq!(state(&listed(false, &[])), "stopped");
        let mut table = Vec::new();
        print_table(&mut table, &[listed(false, &[])], 280).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.starts_with("NAME  USER  IMAGE"), "{table}");
        assert!(table.contains("3m ago     stopped  12"), "{table}");
    }

    #[test]
    fn a_missing_summary_is_no_containers() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_summary(dir.path(), 4321).unwrap().is_none());
        assert_eq!(
            nothing_listed(false, None),
            "no named containers of yours on this node"
        );
    }
}
