//! The container's command, environment and working directory: the image's
//! Entrypoint, Cmd, Env and WorkingDir, overridden by what was asked; and
//! the rule by which a Slurm task's job environment meets the container's.

use std::path::PathBuf;

use crate::image::RuntimeConfig;

use super::{ProcessSpec, SpecError};

/// The PATH a container gets when its image sets none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What was asked of the command beyond the image.
#[derive(Debug, Clone, Default)]
pub struct ProcessAsk<'a> {
    /// The command and its arguments; empty: the image's Entrypoint and Cmd.
    pub command: &'a [String],
    /// `K=V`, or `K` to copy it from `caller_env`.
    pub env: &'a [String],
    /// Working directory (absolute).
    pub workdir: Option<&'a str>,
    /// The caller's TERM, passed on when its output is a terminal.
    pub term: Option<String>,
}

/// The process of a container of `image`: `needs_command` when there must
/// be one (`berth run`; a Slurm task brings its own). `caller_env` reads
/// the caller's variables (for `--env K`).
pub fn process_spec(
    ask: &ProcessAsk,
    image: &RuntimeConfig,
    needs_command: bool,
    caller_env: impl Fn(&str) -> Option<String>,
) -> Result<ProcessSpec, SpecError> {
    let args: Vec<String> = if ask.command.is_empty() {
        image
            .entrypoint
            .iter()
            .flatten()
            .chain(image.cmd.iter().flatten())
            .cloned()
            .collect()
    } else {
        ask.command.to_vec()
    };
    if args.is_empty() && needs_command {
        return Err(SpecError::Invalid(
            "no command given and the image has no Entrypoint or Cmd".into(),
        ));
    }
    let mut env: Vec<String> = image.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.into());
    }
    if let Some(term) = &ask.term {
        set_env(&mut env, &format!("TERM={term}"));
    }
    for e in ask.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => set_env(&mut env, e),
            None if !e.is_empty() => {
                if let Some(v) = caller_env(e) {
                    set_env(&mut env, &format!("{e}={v}"));
                }
            }
            _ => {
                return Err(SpecError::Invalid(format!(
                    "--env {e:?}: expected K=V or K"
                )))
            }
        }
    }
    let cwd = PathBuf::from(
        ask.workdir
            .map(str::to_string)
            .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
    );
    if !cwd.is_absolute() {
        return Err(SpecError::Invalid(format!(
            "--workdir {}: must be an absolute path",
            cwd.display()
        )));
    }
    Ok(ProcessSpec { args, env, cwd })
}

/// Sets `KEY=VALUE` in `env`, replacing an earlier value of KEY.
pub fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split('=').next().unwrap_or(entry);
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(entry.to_string());
}

/// The variables that say which GPUs a job was given: the job's values
/// are its allocation, never the image's.
const GPU_ALLOCATION: &[&str] = &[
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "GPU_DEVICE_ORDINAL",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
];

/// Whether a Slurm task keeps its job's value of `name` over the image's,
/// as in pyxis: the names in `listed` (`--container-env`), Slurm's and
/// MPI's (PMI, PMIx) variables, the GPU allocation and `TERM`. For every
/// other variable the image's `ENV` wins (`CUDA_VERSION`, `PATH`...).
pub fn job_owns(name: &str, listed: &[String]) -> bool {
    listed.iter().any(|l| l == name)
        || ["SLURM_", "SLURMD_", "PMI"]
            .iter()
            .any(|p| name.starts_with(p))
        || GPU_ALLOCATION.contains(&name)
        || name == "TERM"
}

/// The locale variables (`LANG`, `LANGUAGE`, `LC_*`): a job's are not
/// passed into the container unless `--container-env` names them (an
/// image rarely has the job's locale: programs then complain), as in pyxis.
pub fn is_locale(name: &str) -> bool {
    name == "LANG" || name == "LANGUAGE" || name.starts_with("LC_")
}

/// What a Slurm task's environment becomes as it enters the container.
#[derive(Debug, Default, PartialEq)]
pub struct TaskEnvironment {
    /// Set (replacing the job's value).
    pub set: Vec<(String, String)>,
    /// Removed from the job's environment.
    pub unset: Vec<String>,
}

/// A Slurm task's environment in the container: the container's variables
/// (`container_env`) except those the job owns and has (`job_names`: the
/// job's variables), then what the container's devices need
/// (`device_env`, which wins over the job's: the container counts its GPUs
/// from 0); the job's locale variables go unless listed or the image's.
pub fn task_environment(
    container_env: &[String],
    device_env: &[String],
    listed: &[String],
    job_names: &[String],
) -> TaskEnvironment {
    let pairs = |entries: &[String]| -> Vec<(String, String)> {
        entries
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let job_has = |name: &str| job_names.iter().any(|n| n == name);
    let mut set: Vec<(String, String)> = pairs(container_env)
        .into_iter()
        .filter(|(name, _)| !(job_owns(name, listed) && job_has(name)))
        .collect();
    set.extend(pairs(device_env));
    let unset = job_names
        .iter()
        .filter(|name| is_locale(name) && !listed.contains(name))
        .filter(|name| !set.iter().any(|(set, _)| set == *name))
        .cloned()
        .collect();
    TaskEnvironment { set, unset }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RuntimeConfig {
        RuntimeConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            env: Some(vec!["PATH=/opt/bin".into(), "A=image".into()]),
            working_dir: Some("/app".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_image_gives_what_was_not_asked() {
        let p = process_spec(&ProcessAsk::default(), &image(), true, |_| None).unwrap();
        assert_eq!(p.args, ["/entry", "serve"]);
        assert_eq!(p.cwd, PathBuf::from("/app"));
        assert_eq!(p.env, ["PATH=/opt/bin", "A=image"]);
    }

    #[test]
    fn what_was_asked_wins_over_the_image() {
        let command = vec!["sh".to_string()];
        let env = vec!["A=asked".to_string(), "FROM_CALLER".to_string()];
        let ask = ProcessAsk {
            command: &command,
            env: &env,
            workdir: Some("/w"),
            term: Some("xterm".into()),
        };
        let p = process_spec(&ask, &image(), true, |k| {
            (k == "FROM_CALLER").then(|| "yes".to_string())
        })
        .unwrap();
        assert_eq!(p.args, ["sh"]);
        assert_eq!(p.cwd, PathBuf::from("/w"));
        assert_eq!(
            p.env,
            ["PATH=/opt/bin", "TERM=xterm", "A=asked", "FROM_CALLER=yes"]
        );
    }

    #[test]
    fn bad_asks_are_refused_with_their_option() {
        let bare = RuntimeConfig::default();
        let e = process_spec(&ProcessAsk::default(), &bare, true, |_| None).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        // A Slurm task brings its own command; PATH is always set.
        let p = process_spec(&ProcessAsk::default(), &bare, false, |_| None).unwrap();
        assert_eq!(p.env, [DEFAULT_PATH]);
        assert_eq!(p.cwd, PathBuf::from("/"));
        let ask = ProcessAsk {
            workdir: Some("rel"),
            ..Default::default()
        };
        let e = process_spec(&ask, &bare, false, |_| None).unwrap_err();
        assert!(e.to_string().contains("--workdir rel"), "{e}");
        let env = vec!["=v".to_string()];
        let ask = ProcessAsk {
            env: &env,
            ..Default::default()
        };
        let e = process_spec(&ask, &bare, false, |_| None).unwrap_err();
        assert!(e.to_string().contains("--env"), "{e}");
    }

    #[test]
    fn a_task_keeps_the_jobs_own_variables_and_takes_the_devices() {
        let container = [
            "PATH=/usr/bin",
            "SLURM_JOB_ID=stale",
            "CUDA_VERSION=11.8",
            "MINE=image",
            "OTHER=image",
            "TERM=vt100",
            "LC_TIME=C.UTF-8",
        ]
        .map(String::from);
        let devices = ["CUDA_VISIBLE_DEVICES=0".to_string()];
        let listed = ["MINE".to_string(), "LC_NUMERIC".to_string()];
        let job = [
            "SLURM_JOB_ID",
            "MINE",
            "PATH",
            "CUDA_VERSION",
            "TERM",
            "LANG",
            "LC_NUMERIC",
            "LC_TIME",
            "PMIX_RANK",
        ]
        .map(String::from);
        let env = task_environment(&container, &devices, &listed, &job);
        let names: Vec<&str> = env.set.iter().map(|(k, _)| k.as_str()).collect();
        // The image's PATH and CUDA_VERSION win over the job's (as in
        // pyxis); the job's SLURM_JOB_ID, TERM and the listed MINE stay.
        assert_eq!(
            names,
            [
                "PATH",
                "CUDA_VERSION",
                "OTHER",
                "LC_TIME",
                "CUDA_VISIBLE_DEVICES"
            ]
        );
        // The job's locale goes, unless listed or the image's.
        assert_eq!(env.unset, ["LANG"]);
        assert!(job_owns("PMIX_RANK", &[]) && job_owns("PMI_FD", &[]));
        assert!(!job_owns("OMPI_MCA_pml", &[]) && !job_owns("CUDA_HOME", &[]));
    }
}
