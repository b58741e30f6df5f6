//! Which devices a container's cgroup may open (crun's cgroup device
//! handling): on v1 the devices controller's deny-all then allow-list, on
//! v2 the eBPF filter of [`device_filter`] attached to the cgroup's directory.

use std::os::fd::AsFd;

use super::placement::Placement;
use super::{err, write_file};
use crate::limits::device_filter::{self, DeviceRule};
use crate::limits::LimitsError;

/// The v1 writes for `rules`, in order: (file, line). Everything denied,
/// then each rule allowed (`c 1:3 rw`; `*` for any number).
pub fn v1_lines(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut out = vec![("devices.deny", "a *:* rwm".to_string())];
    for rule in rules {
        let kind = if rule.char_device { 'c' } else { 'b' };
        let number = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        // The kernel's order: read, write, mknod (access bits 2, 4, 1).
        let access: String = [(2, 'r'), (4, 'w'), (1, 'm')]
            .into_iter()
            .filter(|(bit, _)| rule.access & bit != 0)
            .map(|(_, c)| c)
            .collect();
        out.push((
            "devices.allow",
            format!(
                "{kind} {}:{} {access}",
                number(rule.major),
                number(rule.minor)
            ),
        ));
    }
    out
}

/// Limits the cgroup `placement` made to `rules`: v2 a device filter
/// program attached to its directory; v1 deny all, then allow each rule.
pub fn apply(placement: &Placement, rules: &[DeviceRule]) -> Result<(), LimitsError> {
    let path = &placement.path;
    if placement.root.is_v2() {
        let dir = std::fs::File::open(placement.root.path.join(path)).map_err(|e| err(path, e))?;
        let program = crate::sys::load_device_filter(&device_filter::program(rules))
            .map_err(|e| err(path, e))?;
        return crate::sys::attach_device_filter(dir.as_fd(), program.as_fd())
            .map_err(|e| err(path, format!("cannot attach the device filter: {e}")));
    }
    let dir = placement.dir_of("devices")?;
    for (file, line) in v1_lines(rules) {
        write_file(dir, file, &line)
            .map_err(|e| err(path, format!("cannot write the device list: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_denies_all_then_allows_each_rule_with_its_access() {
        let rules = [
            DeviceRule {
                char_device: true,
                major: Some(1),
                minor: Some(3),
                access: device_filter::RW,
            },
            DeviceRule {
                char_device: true,
                major: Some(136),
                minor: None,
                access: 1 | 2 | 4,
            },
            DeviceRule {
                char_device: false,
                major: None,
                minor: None,
                access: 2,
            },
        ];
        assert_eq!(
            v1_lines(&rules),
            [
                ("devices.deny", "a *:* rwm".to_string()),
                ("devices.allow", "c 1:3 rw".to_string()),
                ("devices.allow", "c 136:* rwm".to_string()),
                ("devices.allow", "b *:* r".to_string()),
            ]
        );
    }
}
