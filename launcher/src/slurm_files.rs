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

/// `setting` of the file `name` beside slurm.conf (None when unreadable).
pub fn file_setting(name: &str, key: &str) -> Option<String> {
    setting(&std::fs::read_to_string(path(name)).ok()?, key)
}

/// Whether slurmstepd sends a step's signals both to the processes it forked
/// (its tasks) and to their descendants: proctrack/cgroup with
/// `SignalChildrenProcesses=yes`. By default proctrack/cgroup signals only
/// the tasks (and SIGKILL everything); proctrack/pgid signals the step's
/// process group; proctrack/linuxproc signals the task's process tree but
/// skips every process still named like slurmstepd (a task that has not
/// exec'd, as a berth task's relay).
pub fn signals_tasks_and_descendants() -> bool {
    let proctrack =
        file_setting("slurm.conf", "ProctrackType").unwrap_or_else(|| "proctrack/cgroup".into());
    proctrack.eq_ignore_ascii_case("proctrack/cgroup")
        && file_setting("cgroup.conf", "SignalChildrenProcesses")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"))
}

#[cfg(test)]
mod tests {
    use super::setting;

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
