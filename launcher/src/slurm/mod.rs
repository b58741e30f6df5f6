//! Slurm steps' containers: what berth shares with the SPANK plugin (the
//! keeper record), Slurm's config files, and where a step's container
//! cgroup goes.

pub mod files;
pub mod placement;
pub mod record;
pub mod save;
