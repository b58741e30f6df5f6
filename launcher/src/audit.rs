//! The audit trail: one JSON line per container start (or failed start)
//! and end, whoever started it (`berth run`, a Slurm step, a login), to
//! syslog (facility authpriv: journald keeps the sender's uid beside it)
//! and, as root, to `[audit] file`, which users can neither write nor
//! truncate. A record that cannot be written is said on stderr; it never
//! stops a container.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::spec::ContainerSpec;

/// What happened.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A container started.
    Start,
    /// A container could not start (`reason` says why).
    StartFailed,
    /// A container ended.
    End,
    /// A login session started in its user's container.
    SessionStart,
    /// A login session ended.
    SessionEnd,
}

/// Who started it.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `berth run`.
    Run,
    /// A Slurm step (or a later step's view into a named container).
    Slurm,
    /// A login session.
    Login,
}

/// One line of the trail.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// What happened.
    pub event: Event,
    /// Who started it.
    pub origin: Origin,
    /// The container's user (outside any user namespace).
    pub uid: u32,
    /// Their name, when the host knows it.
    pub user: Option<String>,
    /// Slurm: the job, the step, the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<u32>,
    /// Slurm: the step (`0`, `batch`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Slurm: the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The image as asked for.
    pub image: String,
    /// The image's id in the store (its config digest; a directory's path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The registry's manifest digest of the image, when it was pulled
    /// from one (what `docker pull IMAGE@DIGEST` would fetch again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Host paths bound in: `SRC:DST[:ro]`.
    pub mounts: Vec<String>,
    /// Device nodes given (GPUs): host paths.
    pub devices: Vec<String>,
    /// The cgroup limits written: `memory=...`, `pids=...`.
    pub limits: Vec<String>,
    /// The container's first process (its keeper, under Slurm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// At the end: the exit status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// At the end: how long it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A failed start: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A login session: its command (`ssh host COMMAND`), or a login shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Record {
    /// A record of `event` for `uid`'s container of `image`.
    pub fn new(event: Event, origin: Origin, uid: u32, image: &str) -> Record {
        Record {
            time: now(),
            event,
            origin,
            uid,
            user: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name),
            job: None,
            step: None,
            node: None,
            image: image.to_string(),
            image_id: None,
            manifest_digest: None,
            mounts: vec![],
            devices: vec![],
            limits: vec![],
            pid: None,
            exit: None,
            duration_ms: None,
            reason: None,
            command: None,
        }
    }

    /// With the store's image `id` and, when it came from a registry, its
    /// manifest digest.
    pub fn with_image(mut self, store: &crate::image::Store, id: &str) -> Record {
        if id.is_empty() {
            return self;
        }
        self.image_id = Some(id.to_string());
        self.manifest_digest = crate::image::records::list(store)
            .into_iter()
            .filter(|r| r.id == id)
            .find_map(|r| r.manifest_digest);
        self
    }

    /// With what `spec` gives the container: its mounts, devices, limits.
    pub fn with_spec(mut self, spec: &ContainerSpec) -> Record {
        self.mounts = spec
            .mounts
            .iter()
            .map(|m| {
                let ro = if m.read_only { ":ro" } else { "" };
                format!("{}:{}{ro}", m.source.display(), m.destination.display())
            })
            .collect();
        self.devices = spec
            .devices
            .nodes
            .iter()
            .map(|d| d.host.display().to_string())
            .collect();
        if let Some(limits) = spec.cgroup.as_ref().map(|c| &c.limits) {
            let mut written = vec![];
            if let Some(m) = limits.memory {
                written.push(format!("memory={m}"));
            }
            if let Some(s) = limits.swap {
                written.push(format!("swap={s}"));
            }
            if let Some(c) = limits.cpus {
                written.push(format!("cpus={c}"));
            }
            if let Some(p) = limits.pids {
                written.push(format!("pids={p}"));
            }
            self.limits = written;
        }
        self
    }
}

/// Records the end of a Slurm step's container (its keeper `keeper`, of
/// job `job`, on this node), now: how long it ran, its tasks' highest exit
/// status when known, and its out-of-memory
/// kills as the reason when there were any.
pub fn slurm_container_ended(
    config: &slurm_conf::AuditConfig,
    keeper: &crate::slurm::record::KeeperRecord,
    job: Option<u32>,
    exit: Option<i32>,
    oom_kills: u64,
) {
    let step = keeper.step.map(|s| match s {
        0xffff_fffb => "batch".to_string(),
        s => s.to_string(),
    });
    let ended = Record {
        job,
        step,
        node: std::env::var("SLURMD_NODENAME").ok(),
        image_id: Some(keeper.image.clone()).filter(|i| !i.is_empty()),
        pid: Some(keeper.pid),
        exit,
        duration_ms: keeper.running_for().map(|d| d.as_millis() as u64),
        reason: (oom_kills > 0).then(|| format!("{oom_kills} out-of-memory kills")),
        ..Record::new(Event::End, Origin::Slurm, keeper.uid, "")
    };
    record(config, &ended);
}

/// Syslog's severities berth uses.
#[derive(Debug, Clone, Copy)]
pub enum Severity {
    /// A record.
    Info = 6,
    /// The trail could not be written.
    Error = 3,
}

/// Records `record` as `config` says.
pub fn record(config: &slurm_conf::AuditConfig, record: &Record) {
    let line = serde_json::to_string(record).unwrap_or_default();
    if config.syslog {
        syslog(Severity::Info, &format!("berth-audit: {line}"));
    }
    if let Some(file) = &config.file {
        // Only root writes the trail (a user's own `berth run` is in syslog).
        if nix::unistd::geteuid().is_root() {
            if let Err(e) = append(file, &line) {
                let message = format!("cannot write the audit file {}: {e}", file.display());
                syslog(Severity::Error, &format!("berth-audit: {message}"));
                eprintln!("berth: {message}");
            }
        }
    }
}

/// Sends one message to syslog (journald's /dev/log), facility authpriv,
/// as `berth[PID]`, on a socket of its own: nothing of the calling
/// process's own logging (slurmstepd's) changes. No syslog, no message.
pub fn syslog(severity: Severity, message: &str) {
    const AUTHPRIV: u32 = 10 << 3;
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let text = format!(
        "<{}>berth[{}]: {}",
        AUTHPRIV | severity as u32,
        std::process::id(),
        message.replace('\0', " ")
    );
    let _ = socket.send_to(text.as_bytes(), "/dev/log");
}

/// Appends one line to the trail, made root's and 0600 when new, in a
/// directory only root may change (it and every directory above it:
/// root's, writable by no one else, or sticky). A file that is not root's alone
/// (another owner, any group or other bit, another link to it), a FIFO or
/// a symlink is refused.
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: &str| Err(std::io::Error::other(why.to_string()));
    let (Some(dir), Some(_)) = (path.parent(), path.file_name()) else {
        return refuse("it must be an absolute path to a file");
    };
    if !path.is_absolute() {
        return refuse("it must be an absolute path");
    }
    crate::root_dir::only_root_may_change(dir)?;
    // No one but root can change the path from here on (checked above).
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o077 != 0 || meta.nlink() != 1 {
        return refuse("it must be a regular file of root's, mode 0600, with no other link");
    }
    file.write_all(format!("{line}\n").as_bytes())
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        now.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil: the date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_the_calendars() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn the_trail_is_root_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // (The tests run as root: the file is root's.)
        append(&path, "{\"a\":1}").unwrap();
        append(&path, "{\"a\":2}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // One others may read or write is refused, as are a symlink and a
        // second link to it, a relative path, and a directory others may
        // write to.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(append(&path, "x").is_err());
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(append(&link, "x").is_err());
        let hard = dir.path().join("hard");
        std::fs::hard_link(&path, &hard).unwrap();
        assert!(append(&path, "x").is_err());
        std::fs::remove_file(&hard).unwrap();
        assert!(append(Path::new("relative.jsonl"), "x").is_err());
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        assert!(append(&path, "x").is_err());
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        append(&path, "{\"a\":3}").unwrap();
        let line =
            serde_json::to_string(&Record::new(Event::Start, Origin::Run, 0, "img")).unwrap();
        assert!(
            line.contains("\"event\":\"start\",\"origin\":\"run\",\"uid\":0"),
            "{line}"
        );
    }
}
