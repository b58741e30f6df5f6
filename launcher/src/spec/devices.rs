//! The container's devices and cgroup: its GPUs (Slurm's allocation, or
//! `--gpus` within berth.toml's `[gpus]` policy, with what CDI adds) and,
//! when it limits something or holds device nodes whose siblings must stay
//! out of reach, its own cgroup with the limits and a device allow-list.

use std::path::Path;

use super::build::{BuildContext, Purpose};
use super::{CgroupSpec, DeviceEdits, Identity, SpecError};

/// What the user asked for beyond the image: GPUs (`--gpus`) and limits.
pub struct Asks<'a> {
    pub gpus: Option<&'a str>,
    pub limits: crate::limits::Asked,
    /// Root runs a container for itself (no `--user`): the GPU policy lets it
    /// take any GPU.
    pub root_for_itself: bool,
}

/// The container's devices (GPUs, CDI) and its own cgroup, if it needs one.
pub fn devices_and_cgroup(
    ctx: &BuildContext,
    identity: &Identity,
    asked: &Asks,
    purpose: &Purpose,
    console: Option<&Path>,
) -> Result<(DeviceEdits, Option<CgroupSpec>), SpecError> {
    // The name service (maybe LDAP) is asked for the user's and groups'
    // names only when a GPU policy or a per-user/group limit needs them.
    let names = LazyNames {
        identity,
        privileged: ctx.privileged,
        names: std::cell::OnceCell::new(),
    };
    let devices = gpu_devices(ctx, asked, purpose, &names)?;
    let cgroup = cgroup_spec(ctx, &asked.limits, purpose, &names, &devices, console)?;
    Ok((devices, cgroup))
}

/// The user's name and group names, for berth.toml's per-user and
/// per-group GPU grants and limits.
struct AccountNames {
    user: String,
    groups: Vec<String>,
}

/// [`AccountNames`] looked up on first use.
struct LazyNames<'a> {
    identity: &'a Identity,
    privileged: bool,
    names: std::cell::OnceCell<AccountNames>,
}

impl LazyNames<'_> {
    fn get(&self) -> &AccountNames {
        self.names
            .get_or_init(|| account_names(self.identity, self.privileged))
    }
}

fn account_names(identity: &Identity, privileged: bool) -> AccountNames {
    let user = nix::unistd::User::from_uid(identity.host_uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| identity.host_uid.to_string());
    let mut gids = vec![identity.host_gid];
    gids.extend(&identity.host_groups);
    if !privileged {
        gids.extend(
            nix::unistd::getgroups()
                .unwrap_or_default()
                .iter()
                .map(|g| g.as_raw()),
        );
    }
    gids.sort_unstable();
    gids.dedup();
    let groups = gids
        .iter()
        .filter_map(|g| nix::unistd::Group::from_gid((*g).into()).ok().flatten())
        .map(|g| g.name)
        .collect();
    AccountNames { user, groups }
}

/// The container's own cgroup, with the limits of berth.toml and the
/// user's asks and a device filter allowing only the container's devices.
/// Unprivileged berth cannot make cgroups: asking for limits is then an
/// error.
fn cgroup_spec(
    ctx: &BuildContext,
    asked: &crate::limits::Asked,
    purpose: &Purpose,
    names: &LazyNames,
    devices: &DeviceEdits,
    console: Option<&Path>,
) -> Result<Option<CgroupSpec>, SpecError> {
    use crate::limits::{self, device_filter};
    let Some(path) = purpose.cgroup_path.clone().filter(|_| ctx.privileged) else {
        if limits::asked_any(asked) {
            return Err(SpecError::Invalid(
                "resource limits (--memory, --cpus, ...) need berth to run as root".into(),
            ));
        }
        return Ok(None);
    };
    let config = &ctx.config.limits;
    let names_matter =
        !config.users.is_empty() || !config.groups.is_empty() || limits::asked_any(asked);
    let unnamed = AccountNames {
        user: String::new(),
        groups: vec![],
    };
    let names = if names_matter { names.get() } else { &unnamed };
    let who = limits::Who {
        user: &names.user,
        groups: &names.groups,
        partition: purpose.partition.as_deref(),
    };
    let resolved = limits::resolve(config, &who, asked)?;
    // Moving a process into a cgroup costs milliseconds (the migration
    // waits for an RCU grace period; on v1 once per hierarchy), for every
    // task of a Slurm step: berth makes a cgroup only when it limits
    // something, or when the container holds GPU/CDI device nodes whose
    // siblings must stay out of reach (and Slurm does not confine devices
    // itself). The minimal /dev and the mount policy need no filter; once a
    // v2 cgroup exists the filter costs nothing and is always attached.
    let under_slurm = purpose.slurm_gpus.is_some();
    let slurm_confines_devices = under_slurm && purpose.slurm_constrains_devices;
    let needs_filter = !devices.nodes.is_empty() && !slurm_confines_devices;
    if resolved.is_empty() && !needs_filter {
        return Ok(None);
    }
    let filter_devices = needs_filter || limits::cgroup::is_v2();
    let mut rules = device_filter::base_rules();
    for host in devices
        .nodes
        .iter()
        .map(|n| n.host.as_path())
        .chain(console)
    {
        rules.push(
            device_filter::rule_for(host)
                .map_err(SpecError::host(format!("device {}", host.display())))?,
        );
    }
    Ok(Some(CgroupSpec {
        path,
        v1_paths: purpose.cgroup_v1_paths.clone(),
        limits: resolved,
        devices: filter_devices.then_some(rules),
    }))
}

/// The GPUs for this container: Slurm's allocation, or `--gpus` within the
/// policy of berth.toml's `[gpus]`.
fn gpu_devices(
    ctx: &BuildContext,
    asked: &Asks,
    purpose: &Purpose,
    names: &LazyNames,
) -> Result<DeviceEdits, SpecError> {
    use crate::gpu;
    let config = &ctx.config.gpus;
    if let Some(slurm) = &purpose.slurm_gpus {
        if slurm.indexes.is_empty() {
            return Ok(Default::default());
        }
        let (files, from) = gpu::device_files(config, &slurm.gres_conf, &slurm.node);
        return Ok(gpu::edits_for(&slurm.indexes, config, &files, &from)?);
    }
    let Some(list) = asked.gpus else {
        return Ok(Default::default());
    };
    let is_root = asked.root_for_itself;
    let asked = gpu::parse_list(list)?;
    let gres_conf = gpu::gres::conf_path();
    let node = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let (files, from) = gpu::device_files(config, &gres_conf, &node);
    let unnamed = AccountNames {
        user: "root".into(),
        groups: vec![],
    };
    let names = if is_root { &unnamed } else { names.get() };
    let who = gpu::policy::Requester {
        user: &names.user,
        groups: &names.groups,
        is_root,
    };
    let indexes = gpu::policy::check(config, &who, asked, files.len(), &from)?;
    Ok(gpu::edits_for(&indexes, config, &files, &from)?)
}
