//! Slurm steps' containers: starting one on a node (`step`), what berth
//! shares with the SPANK plugin (the keeper record), Slurm's config files,
//! where a step's container cgroup goes, and `--container-save`.

pub mod files;
pub mod placement;
pub mod record;
pub mod save;
pub mod step;
