//! Slurm steps' containers: starting one on a node (`step`), what berth
//! shares with the SPANK plugin (the keeper record), Slurm's config files,
//! where a step's container cgroup goes, `--container-save`, and named
//! containers that outlive their job (`named`).

pub mod files;
pub mod named;
pub mod placement;
pub mod record;
pub mod save;
pub mod step;
