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
}

impl Default for PlugstackArgs {
    fn default() -> Self {
        PlugstackArgs {
            config: PathBuf::from(crate::DEFAULT_CONFIG_PATH),
            berth: PathBuf::from("/usr/bin/berth"),
            runtime_dir: PathBuf::from("/run/berth"),
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
                _ => return Err(err(key, "unknown key (known: config, berth, runtime_dir)")),
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
    }
}
