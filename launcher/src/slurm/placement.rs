//! Where a Slurm step's container cgroup goes: inside the step's own cgroup
//! (the job's, for a named container that outlives its steps), found from
//! slurmstepd's `/proc/PID/cgroup`, on the unified hierarchy and, on v1,
//! once per controller berth uses (Slurm's step cgroups differ between v1
//! hierarchies). Also whether Slurm confines devices itself.

use std::collections::BTreeMap;

/// The container's cgroup paths (relative to each hierarchy's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// On the unified hierarchy (v2), or the path for v1 controllers not listed.
    pub unified: String,
    /// On v1: one path per controller berth uses.
    pub v1: BTreeMap<String, String>,
}

/// How long a container lives, which says where its cgroup goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// A step's: in the step's cgroup.
    Step,
    /// The job's (a named container): beside the steps, in the job's.
    Job,
    /// Longer than the job (the base of a named container of
    /// `container_scope=global`, which runs no task): beside the jobs,
    /// out of reach of the job's end.
    Node,
}

/// The placement of container `container_id` of slurmstepd `stepd`, from
/// slurmstepd's `/proc/PID/cgroup` text. slurmstepd sits in `<step>/slurm`
/// (cgroup/v2) or `<step>/slurm_processes`; see [`Lifetime`] for the
/// rest. Each name holds the container and slurmstepd, unique on the node
/// even where Slurm gives steps no cgroups.
pub fn container_cgroups(
    proc_cgroup: &str,
    stepd: i32,
    lifetime: Lifetime,
    container_id: &str,
    v1_controllers: Option<&[&str]>,
) -> Placement {
    // The path in the hierarchy of `controller` ("" for the unified one).
    let step_path = |controller: &str| {
        let mut path = proc_cgroup
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                let matches = match controller {
                    "" => controllers.is_empty(),
                    c => controllers.split(',').any(|x| x == c),
                };
                matches.then(|| path.to_string())
            })
            .next()
            .unwrap_or_default();
        if path.ends_with("/slurm") || path.ends_with("/slurm_processes") {
            path.truncate(path.rfind('/').unwrap_or(0));
        }
        let cut_at = |path: &mut String, prefix: &str| {
            if let Some(at) = path.find(&format!("/{prefix}")) {
                path.truncate(at);
            }
        };
        match lifetime {
            Lifetime::Step => {}
            Lifetime::Job => cut_at(&mut path, "step_"),
            // Slurm's v1 hierarchies put jobs under `uid_N/`, which Slurm
            // removes with the user's last job.
            Lifetime::Node if path.contains("/uid_") => cut_at(&mut path, "uid_"),
            Lifetime::Node => cut_at(&mut path, "job_"),
        }
        format!("{path}/berth_{container_id}_{stepd}")
            .trim_start_matches('/')
            .to_string()
    };
    Placement {
        unified: step_path(""),
        v1: v1_controllers
            .unwrap_or_default()
            .iter()
            .map(|c| (c.to_string(), step_path(c)))
            .collect(),
    }
}

/// Whether Slurm's cgroup.conf text has it confine devices (ConstrainDevices=yes).
pub fn constrains_devices(cgroup_conf: &str) -> bool {
    super::files::setting(cgroup_conf, "ConstrainDevices")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_STEP: &str = "0::/system.slice/slurmstepd.scope/job_12/step_0/slurm\n";

    #[test]
    fn a_steps_container_goes_in_the_steps_cgroup_beside_slurms() {
        let p = container_cgroups(V2_STEP, 4242, Lifetime::Step, "12.0", None);
        assert_eq!(
            p.unified,
            "system.slice/slurmstepd.scope/job_12/step_0/berth_12.0_4242"
        );
        assert!(p.v1.is_empty());
    }

    #[test]
    fn a_named_container_goes_in_the_jobs_cgroup() {
        let p = container_cgroups(V2_STEP, 4242, Lifetime::Job, "12.name.dev", None);
        assert_eq!(
            p.unified,
            "system.slice/slurmstepd.scope/job_12/berth_12.name.dev_4242"
        );
    }

    #[test]
    fn a_container_outliving_its_job_goes_beside_the_jobs() {
        let p = container_cgroups(V2_STEP, 4242, Lifetime::Node, "u1000.dev", None);
        assert_eq!(
            p.unified,
            "system.slice/slurmstepd.scope/berth_u1000.dev_4242"
        );
        let v1 = "11:memory:/slurm/uid_1001/job_7/step_1/slurm_processes\n";
        let p = container_cgroups(v1, 9, Lifetime::Node, "u1001.dev", Some(&["memory"]));
        assert_eq!(p.v1["memory"], "slurm/berth_u1001.dev_9");
    }

    #[test]
    fn on_v1_each_controller_has_its_own_step_path() {
        let text = "12:pids:/slurm/uid_1001/job_7/step_1\n\
                    11:memory:/slurm/uid_1001/job_7/step_1/slurm_processes\n\
                    4:cpu,cpuacct:/\n\
                    0::/\n";
        let p = container_cgroups(
            text,
            9,
            Lifetime::Step,
            "7.1",
            Some(&["memory", "pids", "cpu"]),
        );
        assert_eq!(p.v1["pids"], "slurm/uid_1001/job_7/step_1/berth_7.1_9");
        assert_eq!(p.v1["memory"], "slurm/uid_1001/job_7/step_1/berth_7.1_9");
        // Slurm gave no cpu cgroup: the container's goes at the root.
        assert_eq!(p.v1["cpu"], "berth_7.1_9");
    }

    #[test]
    fn without_slurms_cgroups_the_name_is_still_unique() {
        let p = container_cgroups("", 5, Lifetime::Step, "3.0", None);
        assert_eq!(p.unified, "berth_3.0_5");
    }

    #[test]
    fn devices_are_slurms_only_with_constraindevices_yes() {
        assert!(constrains_devices(
            "CgroupPlugin=autodetect\nConstrainDevices=yes\n"
        ));
        assert!(constrains_devices("ConstrainDevices = YES # gpus\n"));
        assert!(!constrains_devices("ConstrainDevices=no\n"));
        assert!(!constrains_devices("# ConstrainDevices=yes\n"));
    }
}
