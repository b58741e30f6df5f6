//! `--container-name=NAME[:MODE]`: a container kept across the steps of a job.

use std::fmt;

/// `--container-name=NAME[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerName {
    /// Letters, digits, '_', '.' and '-'.
    pub name: String,
    /// What the step does with it.
    pub mode: NameMode,
}

pub use berth::slurm::step::NameMode;

impl ContainerName {
    /// Parses `NAME[:create|exec|auto|no_exec]`.
    pub fn parse(text: &str) -> Result<ContainerName, String> {
        let (name, mode) = text.split_once(':').unwrap_or((text, "auto"));
        if !berth::slurm::named::valid_name(name) {
            return Err(format!(
                "{name:?}: use at most 128 letters, digits, '_', '.' and '-' (not . or ..)"
            ));
        }
        let mode = NameMode::parse(mode).ok_or_else(|| {
            format!("unknown mode {mode:?} (create, exec, auto, no_exec or remove)")
        })?;
        Ok(ContainerName {
            name: name.to_string(),
            mode,
        })
    }
}

impl fmt::Display for ContainerName {
    /// `NAME[:MODE]`, as `parse` reads it back (`auto`, the default, left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            NameMode::Auto => write!(f, "{}", self.name),
            mode => write!(f, "{}:{}", self.name, mode.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_container_name_is_written_as_it_parses() {
        for text in ["dev", "dev:create", "dev:exec", "d.e-v_1:no_exec"] {
            assert_eq!(ContainerName::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(ContainerName::parse("dev:auto").unwrap().to_string(), "dev");
    }
}
