//! What berth shares with the SPANK plugin about Slurm steps' containers.

pub mod files;
pub mod record;
