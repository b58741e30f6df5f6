//! Who may take which GPU outside Slurm (`berth run --gpus`): the seeds'
//! server, where each user has their own GPU and some are kept for the
//! system. Default deny: a GPU is granted only by `[gpus.users]` (by name, or
//! `"*"` for everyone) or `[gpus.groups]`, and never when it is reserved.
//! Root running a container for itself is not limited.

use slurm_conf::GpusConfig;

use super::GpuError;

/// Who asks.
pub struct Requester<'a> {
    /// The user name (or the uid as text when it has none).
    pub user: &'a str,
    /// The names of the user's groups (primary and supplementary).
    pub groups: &'a [String],
    /// Root asking for itself (no `--user`): the policy does not apply.
    pub is_root: bool,
}

/// The GPUs `who` may take among `count`.
pub fn granted(config: &GpusConfig, who: &Requester, count: usize) -> Vec<u32> {
    let all = 0..count as u32;
    if who.is_root {
        return all.collect();
    }
    let mut grants: Vec<u32> = config
        .users
        .iter()
        .filter(|(name, _)| *name == who.user || *name == "*")
        .chain(config.groups.iter().filter(|(g, _)| who.groups.contains(g)))
        .flat_map(|(_, gpus)| gpus.iter().copied())
        .filter(|g| !config.reserved.contains(g) && all.contains(g))
        .collect();
    grants.sort_unstable();
    grants.dedup();
    grants
}

/// Checks a request (`None`: all the GPUs `who` may take) and returns the indexes.
pub fn check(
    config: &GpusConfig,
    who: &Requester,
    asked: Option<Vec<u32>>,
    count: usize,
    count_from: &str,
) -> Result<Vec<u32>, GpuError> {
    let mine = granted(config, who, count);
    let Some(asked) = asked else {
        if mine.is_empty() {
            return Err(GpuError::Refused(format!(
                "--gpus all: no GPU on this node is granted to {} ([gpus.users] / [gpus.groups] in berth.toml)",
                who.user
            )));
        }
        return Ok(mine);
    };
    for &gpu in &asked {
        if gpu as usize >= count {
            return Err(GpuError::NoSuchGpu {
                index: gpu,
                count,
                source_desc: count_from.to_string(),
            });
        }
        if who.is_root {
            continue;
        }
        if config.reserved.contains(&gpu) {
            return Err(GpuError::Refused(format!(
                "GPU {gpu} is reserved for the system on this node"
            )));
        }
        if !mine.contains(&gpu) {
            return Err(GpuError::Refused(format!(
                "GPU {gpu} is not granted to {} (yours: {})",
                who.user,
                if mine.is_empty() {
                    "none".to_string()
                } else {
                    mine.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }
            )));
        }
    }
    Ok(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds_server() -> GpusConfig {
        let mut c = GpusConfig {
            reserved: vec![6, 7],
            ..Default::default()
        };
        c.users.insert("user1".into(), vec![0]);
        c.users.insert("user2".into(), vec![1, 7]);
        c.groups.insert("ml".into(), vec![2, 3]);
        c
    }

    fn who<'a>(user: &'a str, groups: &'a [String]) -> Requester<'a> {
        Requester {
            user,
            groups,
            is_root: false,
        }
    }

    #[test]
    fn users_get_their_own_and_their_groups_gpus_never_reserved_ones() {
        let c = seeds_server();
        let ml = vec!["ml".to_string()];
        assert_eq!(granted(&c, &who("user1", &[]), 8), [0]);
        assert_eq!(granted(&c, &who("user1", &ml), 8), [0, 2, 3]);
        assert_eq!(granted(&c, &who("user2", &[]), 8), [1]);
        assert!(granted(&c, &who("stranger", &[]), 8).is_empty());
        let err = check(&c, &who("user2", &[]), Some(vec![7]), 8, "test").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        let err = check(&c, &who("user1", &[]), Some(vec![1]), 8, "test").unwrap_err();
        assert!(
            err.to_string()
                .contains("GPU 1 is not granted to user1 (yours: 0)"),
            "{err}"
        );
        assert_eq!(
            check(&c, &who("user1", &ml), None, 8, "test").unwrap(),
            [0, 2, 3]
        );
        assert!(check(&c, &who("stranger", &[]), None, 8, "test").is_err());
        let root = Requester {
            user: "root",
            groups: &[],
            is_root: true,
        };
        assert_eq!(check(&c, &root, Some(vec![7]), 8, "test").unwrap(), [7]);
        assert!(check(&c, &root, Some(vec![8]), 8, "test").is_err());
    }

    #[test]
    fn a_star_entry_grants_everyone() {
        let mut c = seeds_server();
        c.users.insert("*".into(), vec![4, 6]);
        assert_eq!(granted(&c, &who("anyone", &[]), 8), [4]);
    }
}
