//! The pyxis-compatible options and their environment variables: [`OPTIONS`]
//! (the one table), [`Values`] (what the option callback and the
//! environment give, as text) and, parsed once from it, [`ContainerOptions`]
//! (checked in srun/sbatch before the job is queued, and again on the node,
//! by the same parser).

mod name;
mod parse;

use std::collections::BTreeMap;

pub use name::{ContainerName, NameMode};
pub use parse::ContainerOptions;

/// One option: its name, its argument (None for a flag), its help, and the
/// environment variables that set it when the option is not given.
pub struct OptionSpec {
    /// `container-image` for `--container-image`.
    pub name: &'static str,
    /// What the argument looks like, or None for a flag.
    pub arginfo: Option<&'static str>,
    /// Help text for `srun --help`.
    pub usage: &'static str,
    /// The environment variables equivalent to it, in the order they are
    /// looked at; the first is the one the batch step exports.
    pub env: &'static [&'static str],
}

/// Every option, in `val` order (the callback's `val` is the index).
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "container-image", arginfo: Some("[USER@][REGISTRY#]IMAGE[:TAG]|PATH"), usage: "[berth] run the tasks in a container of this image (registry reference, squashfs, OCI layout, docker-archive or directory)", env: &["BERTH_CONTAINER_IMAGE", "PYXIS_CONTAINER_IMAGE"] },
    OptionSpec { name: "container-mounts", arginfo: Some("SRC[:DST[:FLAGS]]|tmpfs:DST[:OPTS]|umount:DST[,...]"), usage: "[berth] bind-mount host paths (FLAGS joined by +: ro, rw, noexec, rprivate, runbindable...), mount a tmpfs, or leave a mount out", env: &["BERTH_CONTAINER_MOUNTS", "PYXIS_CONTAINER_MOUNTS"] },
    OptionSpec { name: "container-workdir", arginfo: Some("PATH"), usage: "[berth] working directory inside the container", env: &["BERTH_CONTAINER_WORKDIR", "PYXIS_CONTAINER_WORKDIR"] },
    OptionSpec { name: "container-name", arginfo: Some("NAME[:create|exec|auto|no_exec]"), usage: "[berth] name the container to keep it across the steps of the job", env: &["BERTH_CONTAINER_NAME", "PYXIS_CONTAINER_NAME"] },
    OptionSpec { name: "container-save", arginfo: Some("PATH"), usage: "[berth] save the container's filesystem as a squashfs file when the step ends", env: &["BERTH_CONTAINER_SAVE", "PYXIS_CONTAINER_SAVE"] },
    OptionSpec { name: "container-env", arginfo: Some("NAME[,NAME...]"), usage: "[berth] take these variables from the job, not from the image", env: &["BERTH_CONTAINER_ENV", "PYXIS_CONTAINER_ENV"] },
    OptionSpec { name: "container-writable", arginfo: None, usage: "[berth] writable container filesystem (the default)", env: &["BERTH_CONTAINER_WRITABLE", "PYXIS_CONTAINER_WRITABLE"] },
    OptionSpec { name: "container-readonly", arginfo: None, usage: "[berth] read-only container filesystem", env: &["BERTH_CONTAINER_READONLY", "PYXIS_CONTAINER_READONLY"] },
    OptionSpec { name: "container-remap-root", arginfo: None, usage: "[berth] appear as root inside the container", env: &["BERTH_CONTAINER_REMAP_ROOT", "PYXIS_CONTAINER_REMAP_ROOT"] },
    OptionSpec { name: "no-container-remap-root", arginfo: None, usage: "[berth] keep your own uid inside the container (the default)", env: &["BERTH_NO_CONTAINER_REMAP_ROOT"] },
    OptionSpec { name: "container-mount-home", arginfo: None, usage: "[berth] bind-mount your home directory", env: &["BERTH_CONTAINER_MOUNT_HOME", "PYXIS_CONTAINER_MOUNT_HOME"] },
    OptionSpec { name: "no-container-mount-home", arginfo: None, usage: "[berth] do not bind-mount your home directory (the default)", env: &["BERTH_NO_CONTAINER_MOUNT_HOME"] },
    OptionSpec { name: "container-entrypoint", arginfo: None, usage: "[berth] run the image's entrypoint once at the step's start; its environment is the tasks'", env: &["BERTH_CONTAINER_ENTRYPOINT", "PYXIS_CONTAINER_ENTRYPOINT"] },
    OptionSpec { name: "no-container-entrypoint", arginfo: None, usage: "[berth] do not run the image's entrypoint (the default)", env: &["BERTH_NO_CONTAINER_ENTRYPOINT"] },
    OptionSpec { name: "container-entrypoint-log", arginfo: None, usage: "[berth] show the output of the image's entrypoint (else shown only when it fails)", env: &["BERTH_CONTAINER_ENTRYPOINT_LOG", "PYXIS_CONTAINER_ENTRYPOINT_LOG"] },
    OptionSpec { name: "container-unshare", arginfo: Some("NS[,NS...]"), usage: "[berth] new namespaces for the container: net (no network but its own loopback); ipc and uts are always the container's own", env: &["BERTH_CONTAINER_UNSHARE", "PYXIS_CONTAINER_UNSHARE"] },
];

/// A flag's environment value as pyxis reads it; None: neither.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "y" | "yes" | "true" | "on" => Some(true),
        "0" | "n" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// The values given as text, by option name (flags have an empty value):
/// the option callback's, then the environment's (and which came from the
/// environment). [`Values::parse`] makes
/// them [`ContainerOptions`]; nothing else reads them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Values(
    BTreeMap<&'static str, String>,
    std::collections::BTreeSet<&'static str>,
);

impl Values {
    /// Records option `index` with its argument.
    pub fn set(&mut self, index: usize, value: Option<String>) -> Result<(), String> {
        let spec = OPTIONS
            .get(index)
            .ok_or_else(|| format!("unknown option number {index}"))?;
        self.0.insert(spec.name, value.unwrap_or_default());
        Ok(())
    }

    /// Fills in options not given from their environment variables (the
    /// first of an option's variables that is set and usable: `BERTH_*`,
    /// then pyxis's `PYXIS_*`). The command line always wins: a flag whose
    /// opposite was given is not looked up. A flag's variable is a boolean
    /// as in pyxis (`1`, `yes`, `true`, `on` or empty; `0`, `no`, `false`,
    /// `off` turns the opposite flag on).
    pub fn fill_from_env(&mut self, getenv: impl Fn(&str) -> Option<String>) {
        for spec in OPTIONS {
            let opposite = parse::opposite(spec.name);
            if self.0.contains_key(spec.name) || opposite.is_some_and(|o| self.0.contains_key(o)) {
                continue;
            }
            match spec.arginfo {
                Some(_) => {
                    let value = spec
                        .env
                        .iter()
                        .find_map(|var| getenv(var).filter(|v| !v.is_empty()));
                    if let Some(v) = value {
                        self.0.insert(spec.name, v);
                        self.1.insert(spec.name);
                    }
                }
                None => {
                    let value = spec
                        .env
                        .iter()
                        .find_map(|var| getenv(var).and_then(|v| boolean(&v)));
                    match (value, opposite) {
                        (Some(true), _) => {
                            self.0.insert(spec.name, String::new());
                            self.1.insert(spec.name);
                        }
                        (Some(false), Some(opposite)) => {
                            self.0.insert(opposite, String::new());
                            self.1.insert(opposite);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Whether a container is asked for: an image, or a container name
    /// (well-formed or not: `parse` says).
    pub fn asks_for_container(&self) -> bool {
        // An empty --container-image= too: `parse` refuses it (the task
        // must not run outside a container it asked for).
        self.0.contains_key("container-image") || self.0.contains_key("container-name")
    }

    /// The value of an option with an argument.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether a flag was given.
    fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}
