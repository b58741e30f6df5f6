//! Capability sets for the container's command.

pub use caps::CapsHashSet;
use caps::{CapSet, Capability};

/// The capability with kernel number `index`.
pub fn from_index(index: u8) -> Option<Capability> {
    caps::all().into_iter().find(|c| c.index() == index)
}

/// A capability error.
#[derive(Debug, thiserror::Error)]
#[error("cannot set capabilities: {0}")]
pub struct CapsError(String);

/// Parses capability names (with or without `CAP_`) as the config holds them.
pub fn parse_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Capability>, CapsError> {
    names
        .into_iter()
        .map(|n| {
            let full = if n.starts_with("CAP_") {
                n.to_string()
            } else {
                format!("CAP_{n}")
            };
            full.parse::<Capability>()
                .map_err(|_| CapsError(format!("unknown capability {n:?}")))
        })
        .collect()
}

/// Removes every capability not in `keep` from the bounding set. Needs
/// CAP_SETPCAP, so it runs before the uid changes.
pub fn limit_bounding_set(keep: &CapsHashSet) -> Result<(), CapsError> {
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| CapsError(format!("dropping {cap} from the bounding set: {e}")))?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets to exactly `keep` and
/// clears the ambient set.
pub fn set_process_capabilities(keep: &CapsHashSet) -> Result<(), CapsError> {
    caps::clear(None, CapSet::Ambient).map_err(|e| CapsError(e.to_string()))?;
    caps::set(None, CapSet::Inheritable, keep)
        .map_err(|e| CapsError(format!("inheritable: {e}")))?;
    caps::set(None, CapSet::Effective, keep).map_err(|e| CapsError(format!("effective: {e}")))?;
    caps::set(None, CapSet::Permitted, keep).map_err(|e| CapsError(format!("permitted: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_and_without_prefix() {
        let caps = parse_names(["CHOWN", "CAP_KILL"]).unwrap();
        assert_eq!(caps, vec![Capability::CAP_CHOWN, Capability::CAP_KILL]);
        assert!(parse_names(["FLY"]).is_err());
    }
}
