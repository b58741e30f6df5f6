//! [`ContainerOptions`]: the options of a step, parsed once from [`Values`]
//! (after pyxis's `struct plugin_args`), and written back as environment
//! variables for the batch script's srun steps.

use std::path::PathBuf;

use berth::mounts::MountRequest;

use super::{ContainerName, Values, OPTIONS};

/// Which of a pair of opposite flags was given, if either
/// (`--container-readonly`/`--container-writable`,
/// `--container-X`/`--no-container-X`): "not given" is kept apart from the
/// default, so that only what was given is passed on to a batch script's steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flag {
    /// Neither: the default, which is off for every pair.
    #[default]
    NotGiven,
    /// The flag that turns it on (`--container-readonly`, `--container-remap-root`...).
    On,
    /// The one that turns it off (`--container-writable`, `--no-container-remap-root`...).
    Off,
}

impl Flag {
    /// Whether it is on (given so).
    pub fn is_on(self) -> bool {
        self == Flag::On
    }

    /// From whether the "on" and the "off" flag were given (not both).
    fn of(on: bool, off: bool) -> Flag {
        match (on, off) {
            (true, _) => Flag::On,
            (_, true) => Flag::Off,
            _ => Flag::NotGiven,
        }
    }
}

/// The pairs of opposite flags, in the order the contradiction message names them.
const PAIRS: [(&str, &str); 4] = [
    ("container-writable", "container-readonly"),
    ("container-remap-root", "no-container-remap-root"),
    ("container-mount-home", "no-container-mount-home"),
    ("container-entrypoint", "no-container-entrypoint"),
];

/// The flag opposite `name`, if it is one of a pair.
pub(super) fn opposite(name: &str) -> Option<&'static str> {
    PAIRS.iter().find_map(|&(a, b)| match name {
        n if n == a => Some(b),
        n if n == b => Some(a),
        _ => None,
    })
}

/// A step's container options, checked: what [`Values::parse`] accepts
/// (in srun, and again on the node) is all the plugin reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerOptions {
    /// `--container-image`: never empty.
    pub image: Option<String>,
    /// `--container-mounts`, each `SRC:DST[:ro|rw]` (sources may be relative:
    /// the node takes them from the job's directory).
    pub mounts: Vec<MountRequest>,
    /// `--container-workdir`: a path in the container (a relative one is
    /// taken from the image's working directory).
    pub workdir: Option<PathBuf>,
    /// `--container-name`, with its mode.
    pub name: Option<ContainerName>,
    /// `--container-save`: an absolute path on the node.
    pub save: Option<PathBuf>,
    /// `--container-env`: the variables whose job value wins over the image's.
    pub env_names: Vec<String>,
    /// `--container-unshare=net`: a network namespace of the container's
    /// own (ipc and uts always are).
    pub unshare_net: bool,
    /// `--container-readonly` (on) / `--container-writable` (off).
    pub read_only: Flag,
    /// `--container-remap-root` / `--no-container-remap-root`.
    pub remap_root: Flag,
    /// `--container-mount-home` / `--no-container-mount-home`.
    pub mount_home: Flag,
    /// `--container-entrypoint` / `--no-container-entrypoint`.
    pub entrypoint: Flag,
    /// `--container-entrypoint-log`: the entrypoint's output is shown
    /// (else only when it fails).
    pub entrypoint_log: bool,
}

impl Values {
    /// Checks every value and makes them [`ContainerOptions`]; the error
    /// names the option.
    pub fn parse(&self) -> Result<ContainerOptions, String> {
        let bad = |name: &str, why: String| format!("--{name}: {why}");
        let image = match self.get("container-image") {
            Some(image) if image.trim().is_empty() => {
                return Err(bad("container-image", "empty image name".into()))
            }
            image => image.map(String::from),
        };
        if let Some(why) = image
            .as_deref()
            .and_then(berth::image::reference::unsupported_scheme)
        {
            return Err(bad("container-image", why));
        }
        // The node's own parser: what srun accepts, the node accepts.
        let mounts = self
            .get("container-mounts")
            .into_iter()
            .flat_map(|m| m.split(','))
            .filter(|m| !m.is_empty())
            .map(|m| MountRequest::parse(m).map_err(|e| bad("container-mounts", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if self.get("container-mounts").is_some() && mounts.is_empty() {
            return Err(bad("container-mounts", "no mount given".into()));
        }
        // Relative: from the image's working directory (as in pyxis).
        let workdir = match self.get("container-workdir") {
            Some("") => return Err(bad("container-workdir", "empty path".into())),
            dir => dir.map(PathBuf::from),
        };
        let name = self
            .get("container-name")
            .map(ContainerName::parse)
            .transpose()
            .map_err(|e| bad("container-name", e))?;
        // Relative: from the job's directory (as in pyxis).
        let save = self
            .get("container-save")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        if let Some(dir) = save.as_ref().filter(|p| p.to_string_lossy().ends_with('/')) {
            return Err(bad(
                "container-save",
                format!(
                    "{} names a directory: give the path of the file to write",
                    dir.display()
                ),
            ));
        }
        let env_names = match self.get("container-env") {
            None => vec![],
            Some(e) => {
                let names: Vec<String> = e.split(',').map(String::from).collect();
                if let Some(name) = names.iter().find(|n| {
                    n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }) {
                    return Err(bad(
                        "container-env",
                        format!("{name:?} is not a variable name"),
                    ));
                }
                names
            }
        };
        let mut unshare_net = false;
        for ns in self
            .get("container-unshare")
            .into_iter()
            .flat_map(|u| u.split(','))
        {
            match ns {
                "net" => unshare_net = true,
                "ipc" | "uts" => {} // always the container's own
                other => {
                    return Err(bad(
                        "container-unshare",
                        format!("{other:?}: expected net, ipc or uts"),
                    ))
                }
            }
        }
        for (a, b) in PAIRS {
            if self.flag(a) && self.flag(b) {
                return Err(format!("--{a} and --{b} contradict each other"));
            }
        }
        // Options from the environment alone ask for nothing (a site's
        // profile may set PYXIS_CONTAINER_MOUNT_HOME for everyone).
        let container_options = self
            .0
            .keys()
            .any(|k| *k != "container-image" && !self.1.contains(k));
        if container_options && image.is_none() && name.is_none() {
            return Err("container options need --container-image (or --container-name of an existing container)".into());
        }
        let flag = |on: &str, off: &str| Flag::of(self.flag(on), self.flag(off));
        Ok(ContainerOptions {
            image,
            mounts,
            workdir,
            name,
            save,
            env_names,
            unshare_net,
            read_only: flag("container-readonly", "container-writable"),
            remap_root: flag("container-remap-root", "no-container-remap-root"),
            mount_home: flag("container-mount-home", "no-container-mount-home"),
            entrypoint: flag("container-entrypoint", "no-container-entrypoint"),
            entrypoint_log: self.flag("container-entrypoint-log"),
        })
    }
}

impl ContainerOptions {
    /// What was given, as the environment variables that set it (each
    /// option's first), in [`OPTIONS`] order: the batch step exports them,
    /// so that the srun steps of its script inherit its container options.
    /// [`Values::fill_from_env`] and [`Values::parse`] read them back as they were.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        let list = |items: Vec<String>| (!items.is_empty()).then(|| items.join(","));
        let given = |flag: Flag, want: Flag| (flag == want).then(|| "1".to_string());
        OPTIONS
            .iter()
            .filter_map(|spec| {
                let value = match spec.name {
                    "container-image" => self.image.clone(),
                    "container-mounts" => list(self.mounts.iter().map(|m| m.to_string()).collect()),
                    "container-workdir" => text(&self.workdir),
                    "container-name" => self.name.as_ref().map(ToString::to_string),
                    "container-save" => text(&self.save),
                    "container-env" => list(self.env_names.clone()),
                    "container-unshare" => self.unshare_net.then(|| "net".to_string()),
                    "container-writable" => given(self.read_only, Flag::Off),
                    "container-readonly" => given(self.read_only, Flag::On),
                    "container-remap-root" => given(self.remap_root, Flag::On),
                    "no-container-remap-root" => given(self.remap_root, Flag::Off),
                    "container-mount-home" => given(self.mount_home, Flag::On),
                    "no-container-mount-home" => given(self.mount_home, Flag::Off),
                    "container-entrypoint" => given(self.entrypoint, Flag::On),
                    "no-container-entrypoint" => given(self.entrypoint, Flag::Off),
                    "container-entrypoint-log" => self.entrypoint_log.then(|| "1".to_string()),
                    _ => None,
                }?;
                Some((*spec.env.first()?, value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::NameMode;
    use std::collections::BTreeSet;

    fn values(pairs: &[(&'static str, &str)]) -> Values {
        Values(
            pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            Default::default(),
        )
    }

    fn mount(text: &str) -> MountRequest {
        MountRequest::parse(text).unwrap()
    }

    #[test]
    fn good_values_become_fields() {
        let options = values(&[
            ("container-image", "ubuntu"),
            ("container-mounts", "/data:/data:ro,,rel:/s"),
            ("container-workdir", "/w"),
            ("container-name", "x:exec"),
            ("container-save", "/out/x.sqsh"),
            ("container-env", "FOO,BAR_1"),
            ("container-unshare", "uts,net"),
            ("container-readonly", ""),
            ("no-container-remap-root", ""),
            ("container-entrypoint", ""),
            ("container-entrypoint-log", ""),
        ])
        .parse()
        .unwrap();
        assert_eq!(
            options,
            ContainerOptions {
                image: Some("ubuntu".into()),
                mounts: vec![mount("/data:/data:ro"), mount("rel:/s")],
                workdir: Some("/w".into()),
                name: Some(ContainerName {
                    name: "x".into(),
                    mode: NameMode::Exec
                }),
                save: Some("/out/x.sqsh".into()),
                env_names: vec!["FOO".into(), "BAR_1".into()],
                unshare_net: true,
                read_only: Flag::On,
                remap_root: Flag::Off,
                mount_home: Flag::NotGiven,
                entrypoint: Flag::On,
                entrypoint_log: true,
            }
        );
        assert!(options.read_only.is_on() && !options.remap_root.is_on());
        assert!(!options.mount_home.is_on());
        // Nothing given: no container, nothing to refuse.
        assert_eq!(Values::default().parse(), Ok(ContainerOptions::default()));
        // A named container of an earlier step needs no image.
        let named = values(&[("container-name", "x"), ("container-mounts", "/a:/b")]);
        assert!(named.asks_for_container());
        assert_eq!(named.parse().unwrap().image, None);
    }

    #[test]
    fn bad_values_name_the_option() {
        let long_name = "a".repeat(300);
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
                vec![("container-image", "u"), ("container-mounts", "rel")],
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
            (vec![("container-image", "")], "--container-image"),
            (
                vec![("container-image", "u"), ("container-mounts", ",")],
                "--container-mounts",
            ),
            (
                vec![("container-image", "u"), ("container-name", &long_name)],
                "--container-name",
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
                vec![("container-image", "u"), ("container-env", "")],
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
            (
                vec![
                    ("container-image", "u"),
                    ("container-remap-root", ""),
                    ("no-container-remap-root", ""),
                ],
                "--no-container-remap-root",
            ),
            (vec![("container-mounts", "/a:/b")], "--container-image"),
        ] {
            let err = values(&pairs).parse().unwrap_err();
            assert!(err.contains(option), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn environment_fills_in() {
        let mut v = values(&[("container-workdir", "/given")]);
        v.fill_from_env(|k| match k {
            "BERTH_CONTAINER_IMAGE" => Some("img".into()),
            "BERTH_CONTAINER_WORKDIR" => Some("/ignored".into()),
            "BERTH_CONTAINER_READONLY" => Some("1".into()),
            "BERTH_CONTAINER_MOUNT_HOME" => Some("0".into()),
            "BERTH_CONTAINER_SAVE" => Some(String::new()),
            _ => None,
        });
        assert!(v.asks_for_container());
        let options = v.parse().unwrap();
        assert_eq!(options.image.as_deref(), Some("img"));
        assert_eq!(options.workdir, Some(PathBuf::from("/given")));
        assert_eq!(options.read_only, Flag::On);
        // A flag's variable set to 0 turns the opposite flag on (pyxis's
        // booleans); an option's set empty is no value.
        assert_eq!(options.mount_home, Flag::Off);
        assert_eq!(options.save, None);
    }

    #[test]
    fn pyxis_variables_work_and_the_command_line_wins() {
        let env = |k: &str| match k {
            "PYXIS_CONTAINER_IMAGE" => Some("ubuntu:24.04".to_string()),
            "PYXIS_CONTAINER_MOUNT_HOME" => Some("1".into()),
            "PYXIS_CONTAINER_REMAP_ROOT" => Some("yes".into()),
            "PYXIS_CONTAINER_WRITABLE" => Some("0".into()),
            "BERTH_CONTAINER_MOUNT_HOME" => Some("1".into()),
            "PYXIS_CONTAINER_ENTRYPOINT" => Some("maybe".into()),
            _ => None,
        };
        let mut v = values(&[("no-container-mount-home", "")]);
        v.fill_from_env(env);
        let options = v.parse().unwrap();
        assert_eq!(options.image.as_deref(), Some("ubuntu:24.04"));
        assert_eq!(options.mount_home, Flag::Off, "the command line wins");
        assert_eq!(options.remap_root, Flag::On);
        assert_eq!(options.read_only, Flag::On, "PYXIS_CONTAINER_WRITABLE=0");
        assert_eq!(options.entrypoint, Flag::NotGiven, "not a boolean");
        // From the environment alone, without an image: nothing asked,
        // nothing refused (a site's profile may set them for everyone).
        let mut v = values(&[]);
        v.fill_from_env(|k| match k {
            "PYXIS_CONTAINER_MOUNT_HOME" => Some("0".to_string()),
            "PYXIS_CONTAINER_MOUNTS" => Some("/data".to_string()),
            _ => None,
        });
        assert!(!v.asks_for_container());
        assert!(v.parse().is_ok());
        // BERTH_* comes first.
        let mut v = values(&[]);
        v.fill_from_env(|k| match k {
            "BERTH_CONTAINER_IMAGE" => Some("a".to_string()),
            "PYXIS_CONTAINER_IMAGE" => Some("b".to_string()),
            _ => None,
        });
        assert_eq!(v.parse().unwrap().image.as_deref(), Some("a"));
    }

    #[test]
    fn the_batch_steps_environment_parses_back_to_its_options() {
        let round_trip = |options: &ContainerOptions| {
            let exported = options.environment();
            let mut v = Values::default();
            v.fill_from_env(|k| {
                exported
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, value)| value.clone())
            });
            v.parse().unwrap()
        };
        let mut exported = BTreeSet::new();
        for pairs in [
            vec![
                ("container-image", "ubuntu:22.04"),
                ("container-mounts", "/data:/data:ro,rel:/s:rw"),
                ("container-workdir", "/w"),
                ("container-name", "x:no_exec"),
                ("container-save", "/out/x.sqsh"),
                ("container-env", "FOO,BAR_1"),
                ("container-unshare", "net"),
                ("container-writable", ""),
                ("container-remap-root", ""),
                ("no-container-mount-home", ""),
                ("no-container-entrypoint", ""),
            ],
            vec![
                ("container-name", "dev"),
                ("container-readonly", ""),
                ("no-container-remap-root", ""),
                ("container-mount-home", ""),
                ("container-entrypoint", ""),
                ("container-entrypoint-log", ""),
            ],
            vec![("container-image", "./img.sqsh")],
            vec![],
        ] {
            let options = values(&pairs).parse().unwrap();
            assert_eq!(round_trip(&options), options, "{pairs:?}");
            exported.extend(options.environment().into_iter().map(|(name, _)| name));
        }
        // Between them, the first two give every option: each is exported.
        let every: BTreeSet<_> = OPTIONS.iter().map(|o| o.env[0]).collect();
        assert_eq!(exported, every);
        // Only what was given is exported, under the option's own variable.
        let options = values(&[("container-image", "u"), ("container-readonly", "")]);
        assert_eq!(
            options.parse().unwrap().environment(),
            vec![
                ("BERTH_CONTAINER_IMAGE", "u".to_string()),
                ("BERTH_CONTAINER_READONLY", "1".to_string()),
            ]
        );
    }
}
