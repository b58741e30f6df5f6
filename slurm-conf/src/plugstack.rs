//! The SPANK plugin's arguments from `plugstack.conf`:
//! `required /path/spank_berth.so config=/etc/berth/berth.toml berth=/usr/bin/berth runtime_dir=/run/berth`.

use std::path::PathBuf;

/// A bad plugstack argument.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("plugstack.conf: spank_berth.so argument {key:?}: {message}")]
pub struct PlugstackError {
    /// The key (or the whole argument when it has no `=`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PlugstackArgs {
    /// berth.toml.
    pub config: PathBuf,
    /// The berth binary the plugin runs to build containers.
    pub berth: PathBuf,
    /// Where per-step state lives (root-only).
    pub runtime_dir: PathBuf,
    /// How long a named container lives (`container_scope=`).
    pub container_scope: ContainerScope,
}

/// How long a named container (`--container-name`) lives, as pyxis's
/// `container_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainerScope {
    /// It stays on the node after the job (its writable layer on disk,
    /// under the store) for the same user's later jobs: pyxis's default.
    #[default]
    Global,
    /// It ends with the job.
    Job,
}

impl Default for PlugstackArgs {
    fn default() -> Self {
        PlugstackArgs {
            config: PathBuf::from(crate::DEFAULT_CONFIG_PATH),
            berth: PathBuf::from("/usr/bin/berth"),
            runtime_dir: PathBuf::from("/run/berth"),
            container_scope: ContainerScope::Global,
        }
    }
}

impl PlugstackArgs {
    /// Parses `key=value` arguments; every key must be known and every path absolute.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<PlugstackArgs, PlugstackError> {
        let mut out = PlugstackArgs::default();
        for arg in args {
            let arg = arg.as_ref();
            let err = |key: &str, message: &str| PlugstackError {
                key: key.to_string(),
                message: message.to_string(),
            };
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| err(arg, "expected key=value"))?;
            let slot = match key {
                "config" => &mut out.config,
                "berth" => &mut out.berth,
                "runtime_dir" => &mut out.runtime_dir,
                "container_scope" => {
                    out.container_scope = match value {
                        "global" => ContainerScope::Global,
                        "job" => ContainerScope::Job,
                        _ => return Err(err(key, "expected global or job")),
                    };
                    continue;
                }
                _ => {
                    return Err(err(
                        key,
                        "unknown key (known: config, berth, runtime_dir, container_scope)",
                    ))
                }
            };
            if !value.starts_with('/') {
                return Err(err(key, "must be an absolute path"));
            }
            *slot = PathBuf::from(value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_errors() {
        let a =
            PlugstackArgs::parse(&["config=/etc/slurm/berth.toml", "berth=/opt/berth/bin/berth"])
                .unwrap();
        assert_eq!(a.config, PathBuf::from("/etc/slurm/berth.toml"));
        assert_eq!(a.runtime_dir, PathBuf::from("/run/berth"));
        let e = PlugstackArgs::parse(&["confg=/x"]).unwrap_err();
        assert_eq!(e.key, "confg");
        assert!(e.to_string().contains("unknown key"));
        assert!(PlugstackArgs::parse(&["config=rel"])
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(PlugstackArgs::parse(&["novalue"]).is_err());
        assert_eq!(a.container_scope, ContainerScope::Global);
        let job = PlugstackArgs::parse(&["container_scope=job"]).unwrap();
        assert_eq!(job.container_scope, ContainerScope::Job);
        let e = PlugstackArgs::parse(&["container_scope=node"]).unwrap_err();
        assert!(e.to_string().contains("global or job"), "{e}");
    }
}
