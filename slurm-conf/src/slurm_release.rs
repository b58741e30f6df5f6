//! Which Slurm release a tree of Slurm headers is: what the SPANK plugin is
//! built for (its build script) and what `berth --version` reports.

use std::path::Path;

/// The oldest and newest Slurm releases berth is built and tested for.
pub const SUPPORTED: (SlurmRelease, SlurmRelease) = (
    SlurmRelease {
        major: 22,
        minor: 5,
    },
    SlurmRelease {
        major: 26,
        minor: 5,
    },
);

/// A Slurm release (major.minor: what a plugin must match to load).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlurmRelease {
    /// e.g. 24
    pub major: u32,
    /// e.g. 11
    pub minor: u32,
}

impl std::fmt::Display for SlurmRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.major, self.minor)
    }
}

impl SlurmRelease {
    /// The release of `SLURM_VERSION_NUMBER` in a slurm_version.h text.
    pub fn of_version_header(text: &str) -> Option<SlurmRelease> {
        let number = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("#define SLURM_VERSION_NUMBER"))
            .find_map(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())?;
        Some(SlurmRelease {
            major: (number >> 16) & 0xff,
            minor: (number >> 8) & 0xff,
        })
    }

    /// The release of the headers under `include_dir` (`slurm/slurm_version.h`).
    pub fn of_include_dir(include_dir: &Path) -> Option<SlurmRelease> {
        let text = std::fs::read_to_string(include_dir.join("slurm/slurm_version.h")).ok()?;
        SlurmRelease::of_version_header(&text)
    }

    /// Whether berth supports it.
    pub fn is_supported(self) -> bool {
        (SUPPORTED.0..=SUPPORTED.1).contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_the_major_and_minor_of_the_version_number() {
        let text = "#ifndef X\n#define SLURM_VERSION_NUMBER 0x180b05\n#endif\n";
        let release = SlurmRelease::of_version_header(text).unwrap();
        assert_eq!(release.to_string(), "24.11");
        assert!(release.is_supported());
        let old = SlurmRelease::of_version_header("#define SLURM_VERSION_NUMBER 0x150803").unwrap();
        assert_eq!(old.to_string(), "21.08");
        assert!(!old.is_supported());
        assert_eq!(SlurmRelease::of_version_header("nothing"), None);
    }
}
