//! The pyxis-compatible options, their environment variables, and their
//! validation (done in srun/sbatch, before the job is queued).

use std::collections::BTreeMap;

/// One option: its name, its argument (None for a flag), its help, and the
/// environment variable that sets it when the option is not given.
pub struct OptionSpec {
    /// `container-image` for `--container-image`.
    pub name: &'static str,
    /// What the argument looks like, or None for a flag.
    pub arginfo: Option<&'static str>,
    /// Help text for `srun --help`.
    pub usage: &'static str,
    /// The environment variable equivalent.
    pub env: &'static str,
}

/// Every option, in `val` order (the callback's `val` is the index).
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "container-image", arginfo: Some("[USER@][REGISTRY#]IMAGE[:TAG]|PATH"), usage: "[berth] run the tasks in a container of this image (registry reference, squashfs, OCI layout, docker-archive or directory)", env: "BERTH_CONTAINER_IMAGE" },
    OptionSpec { name: "container-mounts", arginfo: Some("SRC:DST[:ro|rw][,...]"), usage: "[berth] bind-mount host paths into the container", env: "BERTH_CONTAINER_MOUNTS" },
    OptionSpec { name: "container-workdir", arginfo: Some("PATH"), usage: "[berth] working directory inside the container", env: "BERTH_CONTAINER_WORKDIR" },
    OptionSpec { name: "container-name", arginfo: Some("NAME[:create|exec|auto|no_exec]"), usage: "[berth] name the container to keep it across the steps of the job", env: "BERTH_CONTAINER_NAME" },
    OptionSpec { name: "container-save", arginfo: Some("PATH"), usage: "[berth] save the container's filesystem as a squashfs file when the step ends", env: "BERTH_CONTAINER_SAVE" },
    OptionSpec { name: "container-env", arginfo: Some("NAME[,NAME...]"), usage: "[berth] take these variables from the job, not from the image", env: "BERTH_CONTAINER_ENV" },
    OptionSpec { name: "container-writable", arginfo: None, usage: "[berth] writable container filesystem (the default)", env: "BERTH_CONTAINER_WRITABLE" },
    OptionSpec { name: "container-readonly", arginfo: None, usage: "[berth] read-only container filesystem", env: "BERTH_CONTAINER_READONLY" },
    OptionSpec { name: "container-remap-root", arginfo: None, usage: "[berth] appear as root inside the container", env: "BERTH_CONTAINER_REMAP_ROOT" },
    OptionSpec { name: "no-container-remap-root", arginfo: None, usage: "[berth] keep your own uid inside the container (the default)", env: "BERTH_NO_CONTAINER_REMAP_ROOT" },
    OptionSpec { name: "container-mount-home", arginfo: None, usage: "[berth] bind-mount your home directory", env: "BERTH_CONTAINER_MOUNT_HOME" },
    OptionSpec { name: "no-container-mount-home", arginfo: None, usage: "[berth] do not bind-mount your home directory (the default)", env: "BERTH_NO_CONTAINER_MOUNT_HOME" },
    OptionSpec { name: "container-entrypoint", arginfo: None, usage: "[berth] run the image's entrypoint before the command", env: "BERTH_CONTAINER_ENTRYPOINT" },
    OptionSpec { name: "no-container-entrypoint", arginfo: None, usage: "[berth] do not run the image's entrypoint (the default)", env: "BERTH_NO_CONTAINER_ENTRYPOINT" },
];

/// The values given, by option name (flags have an empty value).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Values(pub BTreeMap<&'static str, String>);

impl Values {
    /// Records option `index` with its argument.
    pub fn set(&mut self, index: usize, value: Option<String>) -> Result<(), String> {
        let spec = OPTIONS
            .get(index)
            .ok_or_else(|| format!("unknown option number {index}"))?;
        self.0.insert(spec.name, value.unwrap_or_default());
        Ok(())
    }

    /// Fills in options not given from their environment variables.
    pub fn fill_from_env(&mut self, getenv: impl Fn(&str) -> Option<String>) {
        for spec in OPTIONS {
            if self.0.contains_key(spec.name) {
                continue;
            }
            if let Some(v) = getenv(spec.env) {
                match spec.arginfo {
                    Some(_) if !v.is_empty() => {
                        self.0.insert(spec.name, v);
                    }
                    None if matches!(v.as_str(), "1" | "yes" | "true" | "") => {
                        self.0.insert(spec.name, String::new());
                    }
                    _ => {}
                }
            }
        }
    }

    /// The value of an option with an argument.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether a flag was given.
    pub fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The image, when a container is asked for.
    pub fn image(&self) -> Option<&str> {
        self.get("container-image").filter(|i| !i.is_empty())
    }

    /// The bind mounts as `SRC:DST[:ro|rw]` items.
    pub fn mounts(&self) -> Vec<&str> {
        self.get("container-mounts")
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// `--container-name`, parsed (None when not given).
    pub fn container_name(&self) -> Option<Result<ContainerName, String>> {
        self.get("container-name").map(ContainerName::parse)
    }

    /// Checks every value; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |name: &str, why: String| Err(format!("--{name}: {why}"));
        if let Some(image) = self.get("container-image") {
            if image.trim().is_empty() {
                return bad("container-image", "empty image name".into());
            }
        }
        // The node's own parser: what srun accepts, the node accepts.
        for mount in self.mounts() {
            berth::mounts::MountSpec::parse(mount)
                .map_err(|e| format!("--container-mounts: {e}"))?;
        }
        if let Some(w) = self.get("container-workdir") {
            if !w.starts_with('/') {
                return bad(
                    "container-workdir",
                    format!("{w:?} is not an absolute path"),
                );
            }
        }
        self.container_name()
            .transpose()
            .map_err(|e| format!("--container-name: {e}"))?;
        if let Some(p) = self.get("container-save") {
            if !p.starts_with('/') {
                return bad("container-save", format!("{p:?} is not an absolute path"));
            }
        }
        if let Some(e) = self.get("container-env") {
            if let Some(name) = e.split(',').find(|n| {
                n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                return bad("container-env", format!("{name:?} is not a variable name"));
            }
        }
        for (a, b) in [
            ("container-writable", "container-readonly"),
            ("container-remap-root", "no-container-remap-root"),
            ("container-mount-home", "no-container-mount-home"),
            ("container-entrypoint", "no-container-entrypoint"),
        ] {
            if self.flag(a) && self.flag(b) {
                return Err(format!("--{a} and --{b} contradict each other"));
            }
        }
        let container_options = self.0.keys().any(|k| *k != "container-image");
        if container_options && self.image().is_none() && self.get("container-name").is_none() {
            return Err("container options need --container-image (or --container-name of an existing container)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> Values {
        Values(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    #[test]
    fn good_values() {
        let v = values(&[
            ("container-image", "ubuntu"),
            ("container-mounts", "/data:/data:ro,/scratch:/s"),
            ("container-workdir", "/w"),
            ("container-name", "x:exec"),
            ("container-env", "FOO,BAR_1"),
        ]);
        v.validate().unwrap();
        assert_eq!(v.mounts(), vec!["/data:/data:ro", "/scratch:/s"]);
    }

    #[test]
    fn bad_values_name_the_option() {
        for (pairs, option) in [
            (vec![("container-image", " ")], "--container-image"),
            (
                vec![("container-image", "u"), ("container-mounts", "/a:rel")],
                "--container-mounts",
            ),
            (
                vec![("container-image", "u"), ("container-mounts", "/a:/b:rx")],
                "--container-mounts",
            ),
            // What the node refuses, srun refuses (one parser).
            (
                vec![
                    ("container-image", "u"),
                    ("container-mounts", "/a:/b:ro+rw"),
                ],
                "--container-mounts",
            ),
            (
                vec![("container-image", "u"), ("container-mounts", "/a:/")],
                "--container-mounts",
            ),
            (
                vec![("container-image", "u"), ("container-mounts", "/a:/b/../c")],
                "--container-mounts",
            ),
            (
                vec![("container-image", "u"), ("container-name", "a/b")],
                "--container-name",
            ),
            (
                vec![("container-image", "u"), ("container-workdir", "rel")],
                "--container-workdir",
            ),
            (
                vec![("container-image", "u"), ("container-name", "x:sometimes")],
                "--container-name",
            ),
            (
                vec![("container-image", "u"), ("container-env", "A-B")],
                "--container-env",
            ),
            (
                vec![
                    ("container-image", "u"),
                    ("container-writable", ""),
                    ("container-readonly", ""),
                ],
                "--container-writable",
            ),
            (vec![("container-mounts", "/a:/b")], "--container-image"),
        ] {
            let err = values(&pairs).validate().unwrap_err();
            assert!(err.contains(option), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn a_container_name_parses_once_with_its_mode() {
        let parse = |t: &str| ContainerName::parse(t).unwrap();
        assert_eq!(parse("dev").mode, NameMode::Auto);
        assert_eq!(parse("dev:create").mode, NameMode::Create);
        assert_eq!(parse("dev:exec").mode, NameMode::Exec);
        let no_exec = parse("d.e-v_1:no_exec");
        assert_eq!(
            (no_exec.name.as_str(), no_exec.mode),
            ("d.e-v_1", NameMode::NoExec)
        );
        for bad in ["", ":exec", "a b", "dev:later"] {
            assert!(ContainerName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_fills_in() {
        let mut v = values(&[("container-workdir", "/given")]);
        v.fill_from_env(|k| match k {
            "BERTH_CONTAINER_IMAGE" => Some("img".into()),
            "BERTH_CONTAINER_WORKDIR" => Some("/ignored".into()),
            "BERTH_CONTAINER_READONLY" => Some("1".into()),
            _ => None,
        });
        assert_eq!(v.image(), Some("img"));
        assert_eq!(v.get("container-workdir"), Some("/given"));
        assert!(v.flag("container-readonly"));
    }
}

/// `--container-name=NAME[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerName {
    /// Letters, digits, '_', '.' and '-'.
    pub name: String,
    /// What the step does with it.
    pub mode: NameMode,
}

/// What a step does with a named container (as in pyxis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMode {
    /// Use it if it exists, else make it (the default).
    Auto,
    /// Make it afresh (an existing one of another step is replaced).
    Create,
    /// Use it; it must exist.
    Exec,
    /// Make it (or keep it), but run the tasks outside it.
    NoExec,
}

impl ContainerName {
    /// Parses `NAME[:create|exec|auto|no_exec]`.
    pub fn parse(text: &str) -> Result<ContainerName, String> {
        let (name, mode) = text.split_once(':').unwrap_or((text, "auto"));
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok {
            return Err(format!("{name:?}: use letters, digits, '_', '.' and '-'"));
        }
        let mode = match mode {
            "auto" => NameMode::Auto,
            "create" => NameMode::Create,
            "exec" => NameMode::Exec,
            "no_exec" => NameMode::NoExec,
            other => {
                return Err(format!(
                    "unknown mode {other:?} (create, exec, auto or no_exec)"
                ))
            }
        };
        Ok(ContainerName {
            name: name.to_string(),
            mode,
        })
    }
}
