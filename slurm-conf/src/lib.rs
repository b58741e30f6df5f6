//! berth's configuration: the `berth.toml` schema with its built-in defaults,
//! loading with errors that name the key and the line, and validation.
//!
//! This crate does no syscalls and knows nothing of Slurm internals: the launcher
//! and the SPANK plugin both read their settings through it.

mod audit;
mod limits;
mod login;
pub mod plugstack;
mod size;
pub mod slurm_release;
pub mod static_program;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use audit::AuditConfig;
pub use limits::{LimitTier, LimitValues, LimitsConfig};
pub use login::{LoginConfig, LoginMount, LoginOverride};
pub use size::{parse_duration, parse_size, DurationError, SizeError};

/// Where berth looks for its configuration when no path is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berth.toml";

/// The capabilities a `--remap-root` container keeps inside its user namespace:
/// the least-privilege list from the project's seeds.
pub const DEFAULT_REMAP_ROOT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "AUDIT_WRITE",
];

/// Every capability name Linux knows, without the `CAP_` prefix.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A configuration error: says which file, which line and which key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What the parser said, naming the key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key, e.g. `security.remap_root_capabilities`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// The whole of `berth.toml`. Every field has a default, so an empty file (or
/// no file at the default path) is a valid configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The node-local image and layer store.
    pub store: StoreConfig,
    /// What containers may do.
    pub security: SecurityConfig,
    /// Host paths users may bind into containers.
    pub mounts: MountsConfig,
    /// Container defaults.
    pub container: ContainerConfig,
    /// Registries: credentials, insecure hosts, download parallelism.
    pub registry: RegistryConfig,
    /// GPUs: where their device files are, CDI, and who may take which.
    pub gpus: GpusConfig,
    /// Resource limits (cgroups): defaults and maxima.
    pub limits: LimitsConfig,
    /// Where each container start and end is recorded.
    pub audit: AuditConfig,
    /// The shared-server setup: users who each have their own container.
    pub login: LoginConfig,
}

/// `[gpus]`: the node's GPUs. Under Slurm the job's allocation decides which
/// GPUs a container gets; outside it (`berth run --gpus`) the maps below do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GpusConfig {
    /// The GPUs' device files in index order (Slurm's index, nvidia-smi's).
    /// Empty: the `File=` entries of `Name=gpu` lines in gres.conf (beside
    /// slurm.conf), else `/dev/nvidia0`, `/dev/nvidia1`, ...
    pub devices: Vec<PathBuf>,
    /// GPU indexes kept for the system: `berth run --gpus` never hands them out.
    pub reserved: Vec<u32>,
    /// Directories of Container Device Interface specs (JSON or YAML).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// The CDI kind whose devices are the GPUs, named by index ("0", "1", ...).
    pub cdi_kind: String,
    /// User name (or "*" for everyone) -> GPU indexes that user may take.
    pub users: std::collections::BTreeMap<String, Vec<u32>>,
    /// Group name -> GPU indexes its members may take.
    pub groups: std::collections::BTreeMap<String, Vec<u32>>,
}

impl Default for GpusConfig {
    fn default() -> Self {
        GpusConfig {
            devices: vec![],
            reserved: vec![],
            cdi_spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            cdi_kind: "nvidia.com/gpu".to_string(),
            users: Default::default(),
            groups: Default::default(),
        }
    }
}

/// `[registry]`: how images are pulled.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Credential files (netrc-style `machine HOST login USER password SECRET`,
    /// or docker `config.json`), searched in order after the user's own
    /// (`~/.config/enroot/.credentials`, `~/.docker/config.json`).
    pub credentials: Vec<PathBuf>,
    /// Registries (`host:port`) that may be reached over plain HTTP. Loopback
    /// registries always may; everything else is HTTPS.
    pub insecure: Vec<String>,
    /// Layers downloaded and extracted at the same time.
    pub parallel_downloads: usize,
    /// How long a user's successful access check of a private registry
    /// image (a manifest request with their credentials) is remembered
    /// before their next start from the node's cache asks the registry
    /// again: `1h`, `30m`, `0` (ask every time).
    pub auth_cache: String,
    /// Mirrors the node pulls from instead of a registry (`"docker.io" =
    /// "mirror.site:5000"`): images keep their own names (`ubuntu:24.04` is
    /// still docker.io's); their content comes from the mirror, with the
    /// mirror's credentials. A cluster without internet points docker.io
    /// (or nvcr.io) at its own.
    pub mirrors: std::collections::BTreeMap<String, String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            credentials: vec![],
            insecure: vec![],
            parallel_downloads: 4,
            auth_cache: "1h".to_string(),
            mirrors: Default::default(),
        }
    }
}

/// `[store]`: where images and layers live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The root-owned store used when berth runs as root. Users who run berth
    /// unprivileged get a store of their own under `$XDG_DATA_HOME/berth`.
    pub path: PathBuf,
    /// The size `berth gc` shrinks the store to when no `--max-size` is given.
    pub max_size: String,
    /// The deepest directory nesting accepted in an image layer; a deeper
    /// entry fails the import with a message naming this key.
    pub max_layer_depth: usize,
    /// The size of a named container's writable layer (Slurm
    /// `container_scope=global`): a filesystem of this size on the node's
    /// disk, per container; writes past it fail with "No space left on
    /// device" in that container only.
    pub container_max_size: String,
    /// `berth gc` removes named containers unused this long (`30d`; `0`: never).
    pub container_max_age: String,
    /// The most named containers one user may keep on a node: each holds
    /// up to `container_max_size` of the store's disk.
    pub container_max_count: usize,
    /// Where root leaves each user's list of their named containers
    /// (`<uid>.json`, readable by that user only) for `berth ps`: users
    /// cannot read the store itself.
    pub summary_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("/var/lib/berth"),
            max_size: "100G".to_string(),
            max_layer_depth: 512,
            container_max_size: "10G".to_string(),
            container_max_age: "30d".to_string(),
            container_max_count: 16,
            summary_dir: PathBuf::from("/run/berth/ps"),
        }
    }
}

/// `[security]`: the privilege policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Capabilities kept (inside the container's user namespace only) when the
    /// user asks for `--remap-root`, names without `CAP_`.
    pub remap_root_capabilities: Vec<String>,
    /// Keep setuid/setgid bits from image layers (default: stripped).
    pub allow_setuid: bool,
    /// Apply the seccomp allow-list (default: true). Turning it off is for
    /// debugging only.
    pub seccomp: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            remap_root_capabilities: DEFAULT_REMAP_ROOT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            allow_setuid: false,
            seccomp: true,
        }
    }
}

/// `[mounts]`: which host paths may be bound into a container.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MountsConfig {
    /// Host path prefixes a user may mount from. A source must also be readable
    /// by the user who asks.
    pub allowed_prefixes: Vec<PathBuf>,
    /// Host paths (and everything below them) that may never be mounted.
    pub denied_prefixes: Vec<PathBuf>,
}

impl Default for MountsConfig {
    fn default() -> Self {
        MountsConfig {
            allowed_prefixes: vec![PathBuf::from("/")],
            denied_prefixes: [
                "/proc",
                "/sys",
                "/dev",
                "/run/docker.sock",
                "/var/run/docker.sock",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

/// `[container]`: defaults for every container.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// The hostname inside the container when none is asked for.
    pub hostname: String,
    /// Size limit of the tmpfs that holds a container's writable layer, e.g. "50%" or "4G".
    pub upper_size: String,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            hostname: "berth".to_string(),
            upper_size: "50%".to_string(),
        }
    }
}

impl Config {
    /// Loads `path`. When `path` is the default path and the file does not exist,
    /// the built-in defaults are returned; a path the caller named must exist.
    pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Config::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start)).unwrap_or(1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        for cap in &self.security.remap_root_capabilities {
            let name = cap.strip_prefix("CAP_").unwrap_or(cap);
            if !KNOWN_CAPABILITIES.contains(&name) {
                return Err(invalid(
                    "security.remap_root_capabilities",
                    format!(
                        "unknown capability {cap:?} (use names like \"CHOWN\" or \"CAP_CHOWN\")"
                    ),
                ));
            }
        }
        for (key, path) in [
            ("store.path", &self.store.path),
            ("store.summary_dir", &self.store.summary_dir),
            ("login.socket", &self.login.socket),
        ] {
            if !path.is_absolute() {
                return Err(invalid(key, format!("{path:?} is not an absolute path")));
            }
        }
        if let Some(shell) = self.login.shells.iter().find(|s| !s.starts_with('/')) {
            return Err(invalid(
                "login.shells",
                format!("{shell:?} is not an absolute path"),
            ));
        }
        let override_mounts = self
            .login
            .user
            .iter()
            .map(|(n, o)| (format!("login.user.{n}"), o))
            .chain(
                self.login
                    .group
                    .iter()
                    .map(|(n, o)| (format!("login.group.{n}"), o)),
            );
        let all_mounts = self
            .login
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("login.mounts[{i}]"), m))
            .chain(override_mounts.flat_map(|(key, o)| {
                o.mounts
                    .iter()
                    .enumerate()
                    .map(move |(i, m)| (format!("{key}.mounts[{i}]"), m))
            }));
        for (key, mount) in all_mounts {
            if !mount.source.starts_with('/') || !mount.destination.is_absolute() {
                return Err(invalid(
                    &key,
                    "source and destination must be absolute paths".into(),
                ));
            }
            if let Some(mode) = &mount.mode {
                if u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o7777) {
                    return Err(invalid(
                        &key,
                        format!("mode {mode:?}: expected octal, e.g. \"0700\""),
                    ));
                }
            }
        }
        for (key, list) in [
            ("mounts.allowed_prefixes", &self.mounts.allowed_prefixes),
            ("mounts.denied_prefixes", &self.mounts.denied_prefixes),
        ] {
            if let Some(p) = list.iter().find(|p| !p.is_absolute()) {
                return Err(invalid(key, format!("{p:?} is not an absolute path")));
            }
        }
        parse_size(&self.store.max_size).map_err(|e| invalid("store.max_size", e.to_string()))?;
        parse_duration(&self.login.idle_stop)
            .map_err(|e| invalid("login.idle_stop", e.to_string()))?;
        parse_size(&self.store.container_max_size)
            .map_err(|e| invalid("store.container_max_size", e.to_string()))?;
        parse_duration(&self.store.container_max_age)
            .map_err(|e| invalid("store.container_max_age", e.to_string()))?;
        if self.store.max_layer_depth == 0 {
            return Err(invalid(
                "store.max_layer_depth",
                "must be at least 1".into(),
            ));
        }
        parse_duration(&self.registry.auth_cache)
            .map_err(|e| invalid("registry.auth_cache", e.to_string()))?;
        for (registry, mirror) in &self.registry.mirrors {
            let host_like = |h: &str| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            };
            if !host_like(registry) || !host_like(mirror) {
                return Err(invalid(
                    "registry.mirrors",
                    format!("{registry:?} = {mirror:?}: write HOST[:PORT] = HOST[:PORT]"),
                ));
            }
        }
        if self.registry.parallel_downloads == 0 || self.registry.parallel_downloads > 64 {
            return Err(invalid(
                "registry.parallel_downloads",
                format!(
                    "{} is not between 1 and 64",
                    self.registry.parallel_downloads
                ),
            ));
        }
        if let Some(p) = self.registry.credentials.iter().find(|p| !p.is_absolute()) {
            return Err(invalid(
                "registry.credentials",
                format!("{p:?} is not an absolute path"),
            ));
        }
        for (key, list) in [
            ("gpus.devices", &self.gpus.devices),
            ("gpus.cdi_spec_dirs", &self.gpus.cdi_spec_dirs),
        ] {
            if let Some(p) = list.iter().find(|p| !p.is_absolute()) {
                return Err(invalid(key, format!("{p:?} is not an absolute path")));
            }
        }
        if self
            .gpus
            .cdi_kind
            .split_once('/')
            .is_none_or(|(vendor, class)| {
                vendor.is_empty() || class.is_empty() || class.contains('/')
            })
        {
            return Err(invalid(
                "gpus.cdi_kind",
                format!(
                    "{:?} is not a CDI kind like \"nvidia.com/gpu\"",
                    self.gpus.cdi_kind
                ),
            ));
        }
        self.limits.validate(&invalid)?;
        validate_hostname(&self.container.hostname)
            .map_err(|m| invalid("container.hostname", m))?;
        if !self.container.upper_size.ends_with('%') {
            parse_size(&self.container.upper_size)
                .map_err(|e| invalid("container.upper_size", e.to_string()))?;
        } else {
            let pct = &self.container.upper_size[..self.container.upper_size.len() - 1];
            match pct.parse::<u32>() {
                Ok(1..=100) => {}
                _ => {
                    return Err(invalid(
                        "container.upper_size",
                        format!(
                            "{:?} is not a size like \"4G\" or a percentage from 1% to 100%",
                            self.container.upper_size
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The capability names for remap-root containers, without `CAP_` prefixes.
    pub fn remap_root_capabilities(&self) -> Vec<&str> {
        self.security
            .remap_root_capabilities
            .iter()
            .map(|c| c.strip_prefix("CAP_").unwrap_or(c))
            .collect()
    }
}

/// Checks a hostname: 1 to 64 characters of letters, digits, `-` and `.`.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid hostname (1-64 letters, digits, '-' or '.')"
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/berth/berth.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(
            Config::default().store.path,
            PathBuf::from("/var/lib/berth")
        );
        assert!(Config::default().security.seccomp);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err =
            parse("[store]\npath = \"/x\"\n\n[security]\nallow_setuidd = true\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/berth/berth.toml:5:"), "{msg}");
        assert!(msg.contains("allow_setuidd"), "{msg}");
    }

    #[test]
    fn bad_value_type_names_line() {
        let err = parse("[security]\nseccomp = \"yes\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/berth/berth.toml:2:"), "{msg}");
    }

    #[test]
    fn unknown_capability_is_refused() {
        let err =
            parse("[security]\nremap_root_capabilities = [\"CHOWN\", \"FLY\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("security.remap_root_capabilities"), "{msg}");
        assert!(msg.contains("FLY"), "{msg}");
    }

    #[test]
    fn cap_prefix_is_accepted() {
        let c = parse("[security]\nremap_root_capabilities = [\"CAP_KILL\"]\n").unwrap();
        assert_eq!(c.remap_root_capabilities(), vec!["KILL"]);
    }

    #[test]
    fn relative_store_path_is_refused() {
        let msg = parse("[store]\npath = \"var/lib\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("store.path"), "{msg}");
        let msg = parse("[store]\nsummary_dir = \"run/ps\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("store.summary_dir"), "{msg}");
    }

    #[test]
    fn bad_upper_size_is_refused() {
        for bad in ["0%", "101%", "lots", "5Q"] {
            let text = format!("[container]\nupper_size = \"{bad}\"\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("container.upper_size"), "{bad}: {msg}");
        }
        for good in ["1%", "100%", "4G", "512M", "1024"] {
            let text = format!("[container]\nupper_size = \"{good}\"\n");
            parse(&text).unwrap();
        }
    }

    #[test]
    fn the_readme_example_config_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml example") + 8;
        let end = start + readme[start..].find("```").unwrap();
        let config = parse(&readme[start..end]).unwrap();
        assert_eq!(config, Config::default(), "the README shows the defaults");
    }

    #[test]
    fn registry_section() {
        let c =
            parse("[registry]\ninsecure = [\"reg.local:5000\"]\nparallel_downloads = 2\n").unwrap();
        assert_eq!(c.registry.insecure, vec!["reg.local:5000".to_string()]);
        let msg = parse("[registry]\nparallel_downloads = 0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("registry.parallel_downloads"), "{msg}");
        let msg = parse("[store]\nmax_size = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("store.max_size"), "{msg}");
    }

    #[test]
    fn bad_hostname_is_refused() {
        let msg = parse("[container]\nhostname = \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("container.hostname"), "{msg}");
    }

    #[test]
    fn missing_default_file_gives_defaults_but_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("berth.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        let msg = Config::load(&missing, true).unwrap_err().to_string();
        assert!(msg.contains("cannot read config file"), "{msg}");
    }
}
