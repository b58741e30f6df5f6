//! Slurm's own configuration files, as far as berth reads them: where they
//! are (beside `$SLURM_CONF`, which slurmd sets, also in configless mode)
//! and one `Key=Value` setting of them.

use std::path::PathBuf;

/// The Slurm configuration file `name` (e.g. "gres.conf"), beside slurm.conf.
pub fn path(name: &str) -> PathBuf {
    std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from("/etc/slurm").join(name))
}

/// The value of `key` (case-insensitive, as Slurm reads keys; spaces
/// around `=` allowed) in a slurm.conf-style text; the last one counts.
/// Comments are skipped.
pub fn setting(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(|line| {
            let line = line.split('#').next().unwrap_or("");
            line.split('=').map(str::trim).collect::<Vec<_>>().join("=")
        })
        .flat_map(|line| {
            line.split_whitespace()
                .filter_map(|field| field.split_once('='))
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.to_string())
                .collect::<Vec<_>>()
        })
        .last()
}

/// The words of a configuration line, before its comment.
fn words(line: &str) -> Vec<&str> {
    line.split('#')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

/// `setting` of `file` (None when unreadable) and the files its `Include`
/// lines name (relative ones beside it).
fn setting_in(file: &std::path::Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let dir = file.parent().unwrap_or(std::path::Path::new("/"));
    let mut found = None;
    for line in text.lines() {
        match words(line).as_slice() {
            [include, included] if include.eq_ignore_ascii_case("include") => {
                let text = std::fs::read_to_string(dir.join(included)).unwrap_or_default();
                found = setting(&text, key).or(found);
            }
            _ => found = setting(line, key).or(found),
        }
    }
    found
}

/// The SPANK plugins (absolute paths of files that exist) the plugstack
/// file beside `slurm_conf` loads (`PlugStackConfig`, else
/// plugstack.conf), its `include`d files too (a `*` in their last
/// component): what srun in a login container must find where the host
/// has them.
pub fn spank_plugins(slurm_conf: &std::path::Path) -> Vec<PathBuf> {
    let dir = slurm_conf
        .parent()
        .unwrap_or(std::path::Path::new("/etc/slurm"));
    let plugstack = setting_in(slurm_conf, "PlugStackConfig")
        .map(|p| dir.join(p))
        .unwrap_or_else(|| dir.join("plugstack.conf"));
    let mut plugins = vec![];
    let mut files = vec![plugstack];
    let mut read = 0;
    while let Some(file) = files.pop() {
        read += 1;
        if read > 64 {
            break; // an include loop
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines() {
            match words(line).as_slice() {
                ["include", pattern, ..] => files.extend(matching(&dir.join(pattern))),
                ["required" | "optional", plugin, ..] if plugin.starts_with('/') => {
                    let plugin = PathBuf::from(plugin);
                    if plugin.is_file() && !plugins.contains(&plugin) {
                        plugins.push(plugin);
                    }
                }
                _ => {}
            }
        }
    }
    plugins
}

/// The files `pattern` names: itself, or with a `*` in its last
/// component, those of its directory that match.
fn matching(pattern: &std::path::Path) -> Vec<PathBuf> {
    let name = pattern.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((before, after)) = name.split_once('*') else {
        return vec![pattern.to_path_buf()];
    };
    let dir = pattern.parent().unwrap_or(std::path::Path::new("/"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.len() >= before.len() + after.len()
                            && n.starts_with(before)
                            && n.ends_with(after)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Where Slurm's PMIx plugin serves a step on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmixStep<'a> {
    /// The node's name in Slurm.
    pub node: &'a str,
    /// The job's user: both directories are theirs.
    pub uid: u32,
    /// The job (a heterogeneous job's own id, which Slurm names them by).
    pub job: u32,
    /// The step.
    pub step: u32,
    /// The job's `SLURM_PMIX_TMPDIR`, which Slurm takes first for its
    /// clients' directory.
    pub client_base: Option<String>,
}

/// The directories Slurm's PMIx plugin serves a step from, as the
/// configuration in `conf_dir` places them: the server's
/// (`SlurmdSpoolDir/pmix.JOB.STEP`: its shared-memory stores) and its
/// clients' (`spmix_appdir_UID_JOB.STEP` in the job's `SLURM_PMIX_TMPDIR`,
/// else mpi.conf's `PMIxCliTmpDirBase`, else slurm.conf's `TmpFS`, else
/// /tmp). Only real directories (no symlink) of the job's user count:
/// Slurm makes both and gives them to the user, and the clients' is in a
/// directory anyone may write to. The others are returned apart, to be
/// reported.
pub fn pmix_dirs(conf_dir: &std::path::Path, step: &PmixStep) -> (Vec<PathBuf>, Vec<PathBuf>) {
    use std::os::unix::fs::MetadataExt;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let expand = |dir: String| PathBuf::from(dir.replace("%n", step.node).replace("%h", &hostname));
    let slurm_conf = conf_dir.join("slurm.conf");
    let spool = expand(
        setting_in(&slurm_conf, "SlurmdSpoolDir").unwrap_or_else(|| "/var/spool/slurmd".into()),
    );
    // mpi.conf's base and the job's are used as written; TmpFS expands.
    let clients = step
        .client_base
        .clone()
        .or_else(|| setting_in(&conf_dir.join("mpi.conf"), "PMIxCliTmpDirBase"))
        .map(PathBuf::from)
        .or_else(|| setting_in(&slurm_conf, "TmpFS").map(expand))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let (job, s) = (step.job, step.step);
    let candidates = [
        spool.join(format!("pmix.{job}.{s}")),
        clients.join(format!("spmix_appdir_{}_{job}.{s}", step.uid)),
    ];
    let users = |dir: &PathBuf| {
        std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir() && m.uid() == step.uid)
    };
    candidates.into_iter().partition(users)
}

/// Whether slurmstepd sends a step's signals both to the processes it
/// forked (its tasks) and to their descendants: proctrack/pgid (the task's
/// process group) and proctrack/cgroup with `SignalChildrenProcesses=yes`.
/// Slurm's default, proctrack/cgroup, signals only the tasks (and SIGKILL
/// everything); proctrack/linuxproc signals the task's process tree but
/// skips every process still named like slurmstepd (a task that has not
/// exec'd, as a berth task's relay).
/// Read from slurm.conf and cgroup.conf in `conf_dir`.
pub fn signals_tasks_and_descendants(conf_dir: &std::path::Path) -> bool {
    let proctrack = setting_in(&conf_dir.join("slurm.conf"), "ProctrackType")
        .unwrap_or_else(|| "proctrack/cgroup".into());
    match proctrack.to_ascii_lowercase().as_str() {
        "proctrack/pgid" => true,
        "proctrack/cgroup" => setting_in(&conf_dir.join("cgroup.conf"), "SignalChildrenProcesses")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        _ => false,
    }
}

/// Whether Slurm tracks GPUs on this node (`GresTypes` in slurm.conf in
/// `conf_dir` names `gpu`): only then does slurmstepd set, or clear, a
/// step's `SLURM_STEP_GPUS` / `SLURM_JOB_GPUS` before the tasks start.
/// Otherwise those variables are whatever the user's srun sent.
pub fn tracks_gpus(conf_dir: &std::path::Path) -> bool {
    setting_in(&conf_dir.join("slurm.conf"), "GresTypes").is_some_and(|types| {
        types
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("gpu"))
    })
}

#[cfg(test)]
mod tests {
    use super::{pmix_dirs, setting, setting_in, spank_plugins, tracks_gpus, PmixStep};
    use std::path::Path;

    #[test]
    fn spank_plugins_are_found_through_includes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let plugin = d.join("spank_x.so");
        std::fs::write(&plugin, "").unwrap();
        std::fs::write(d.join("slurm.conf"), "ClusterName=c\n").unwrap();
        std::fs::create_dir(d.join("plugstack.conf.d")).unwrap();
        std::fs::write(
            d.join("plugstack.conf"),
            "# comment\ninclude plugstack.conf.d/*.conf\noptional /no/such.so\n",
        )
        .unwrap();
        std::fs::write(
            d.join("plugstack.conf.d/x.conf"),
            format!("required {} a=b\n", plugin.display()),
        )
        .unwrap();
        std::fs::write(
            d.join("plugstack.conf.d/x.conf.off"),
            "required /etc/passwd\n",
        )
        .unwrap();
        assert_eq!(spank_plugins(&d.join("slurm.conf")), [plugin]);
    }

    #[test]
    fn gpus_are_slurms_only_where_gres_types_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("slurm.conf");
        for (text, tracked) in [
            ("GresTypes=gpu\n", true),
            ("GresTypes=mps,GPU,shard\n", true),
            ("GresTypes=gpu # comment\nNodeName=n Gres=gpu:2\n", true),
            ("GresTypes=mps\n", false),
            ("#GresTypes=gpu\n", false),
            ("NodeName=n Gres=gpu:2\n", false),
        ] {
            std::fs::write(&conf, text).unwrap();
            assert_eq!(tracks_gpus(dir.path()), tracked, "{text:?}");
        }
        std::fs::remove_file(&conf).unwrap();
        assert!(!tracks_gpus(dir.path()), "no slurm.conf");
    }

    #[test]
    fn slurmstepd_reaches_descendants_under_pgid_and_signal_children_only() {
        let dir = tempfile::tempdir().unwrap();
        let conf = |slurm: &str, cgroup: &str| {
            std::fs::write(dir.path().join("slurm.conf"), slurm).unwrap();
            std::fs::write(dir.path().join("cgroup.conf"), cgroup).unwrap();
            super::signals_tasks_and_descendants(dir.path())
        };
        assert!(conf("ProctrackType=proctrack/pgid\n", ""));
        assert!(!conf("ProctrackType=proctrack/linuxproc\n", ""));
        assert!(!conf("ProctrackType=proctrack/cgroup\n", ""));
        assert!(conf(
            "ProctrackType=proctrack/cgroup\n",
            "SignalChildrenProcesses=yes\n"
        ));
        // Slurm's default is proctrack/cgroup.
        assert!(conf("ClusterName=c\n", "SignalChildrenProcesses=Yes\n"));
    }

    #[test]
    fn included_files_count_where_they_are_included() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tracking.conf"),
            "ProctrackType=proctrack/pgid\n",
        )
        .unwrap();
        let main = dir.path().join("slurm.conf");
        std::fs::write(
            &main,
            "ProctrackType=proctrack/cgroup\nInclude tracking.conf\n",
        )
        .unwrap();
        assert_eq!(
            setting_in(&main, "ProctrackType").as_deref(),
            Some("proctrack/pgid")
        );
        std::fs::write(
            &main,
            "include tracking.conf\nProctrackType=proctrack/linuxproc\n",
        )
        .unwrap();
        assert_eq!(
            setting_in(&main, "proctracktype").as_deref(),
            Some("proctrack/linuxproc")
        );
    }

    #[test]
    fn a_setting_is_found_case_insensitively_past_comments_and_other_keys() {
        let text =
            "# ProctrackType=proctrack/pgid\nClusterName=c ProcTrackType=proctrack/linuxproc\n\
                    NodeName=n1 CPUs=2 # ProctrackType=x\n";
        assert_eq!(
            setting(text, "ProctrackType").as_deref(),
            Some("proctrack/linuxproc")
        );
        assert_eq!(setting(text, "cpus").as_deref(), Some("2"));
        assert_eq!(setting(text, "TaskPlugin"), None);
        assert_eq!(
            setting("ConstrainDevices = yes\n", "ConstrainDevices").as_deref(),
            Some("yes")
        );
    }

    #[test]
    fn pmix_directories_are_the_users_where_the_nodes_configuration_puts_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("slurm.conf"),
            format!(
                "SlurmdSpoolDir={}/spool/%n\nTmpFS={}/tmpfs\n",
                d.display(),
                d.display()
            ),
        )
        .unwrap();
        let server = d.join("spool/n2/pmix.7.0");
        let clients = d.join("tmpfs/spmix_appdir_1001_7.0");
        for made in [&server, &clients, &d.join("spool/n1/pmix.7.0")] {
            std::fs::create_dir_all(made).unwrap();
            std::os::unix::fs::chown(made, Some(1001), None).unwrap();
        }
        let step = |job, client_base: Option<&Path>| PmixStep {
            node: "n2",
            uid: 1001,
            job,
            step: 0,
            client_base: client_base.map(|b| b.display().to_string()),
        };
        assert_eq!(
            pmix_dirs(d, &step(7, None)).0,
            [server.clone(), clients.clone()]
        );
        // The job's base wins over mpi.conf's, which wins over TmpFS.
        std::fs::write(d.join("mpi.conf"), "PMIxCliTmpDirBase=/nonexistent\n").unwrap();
        assert_eq!(
            pmix_dirs(d, &step(7, None)).0,
            std::slice::from_ref(&server)
        );
        let tmpfs = d.join("tmpfs");
        assert_eq!(
            pmix_dirs(d, &step(7, Some(&tmpfs))).0,
            [server.clone(), clients.clone()]
        );
        assert!(pmix_dirs(d, &step(8, None)).0.is_empty());
        // Another's directory, or a symlink to the user's, is not taken.
        std::os::unix::fs::chown(&clients, Some(0), None).unwrap();
        let (taken, refused) = pmix_dirs(d, &step(7, Some(&tmpfs)));
        assert_eq!(
            (taken, refused),
            (vec![server.clone()], vec![clients.clone()])
        );
        std::fs::remove_dir(&clients).unwrap();
        std::os::unix::fs::symlink(&server, &clients).unwrap();
        assert_eq!(pmix_dirs(d, &step(7, Some(&tmpfs))).0, [server]);
    }

    #[test]
    fn the_last_setting_counts() {
        assert_eq!(
            setting(
                "ConstrainDevices=no\nConstrainDevices=yes\n",
                "constraindevices"
            )
            .as_deref(),
            Some("yes")
        );
    }
}
