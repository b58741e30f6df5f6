//! Confining a process: the last steps before it runs what the user asked
//! for, in one order, for every path that starts one: `berth run`'s command
//! (`exec.rs`) and its init (`init.rs`), a Slurm task (the SPANK plugin's
//! task_init), and `Syscall::run_confined`'s helper.
//!
//! The order: supplementary groups and the bounding set while the process
//! may still change them, then gid and uid, then the capability sets
//! (exactly the ones kept, none inheritable by exec but those), then
//! no_new_privs and the seccomp filter, which may forbid what came before.

use caps::CapsHashSet;
use nix::unistd::{Gid, Uid};

/// What confining one process does.
pub struct Confinement<'a> {
    /// Supplementary groups to set (None: keep them: remapped, or already
    /// set by Slurm or before a user namespace).
    pub groups: Option<&'a [u32]>,
    /// Real, effective and saved uid and gid to take (None: already the
    /// right ones, as after Slurm's setuid).
    pub ids: Option<(u32, u32)>,
    /// The capabilities kept: the bounding set is cut to them, and the
    /// permitted, effective and inheritable sets are exactly them.
    pub capabilities: &'a CapsHashSet,
    /// no_new_privs and the seccomp filter.
    pub filter: Filter<'a>,
}

/// no_new_privs and the seccomp filter of a confinement.
pub enum Filter<'a> {
    /// Set them here: no_new_privs, then this program (None: no filter).
    Set(Option<&'a [u8]>),
    /// Already in force (set before a fork, inherited).
    Inherited,
}

/// What confining failed at.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// setgroups failed.
    #[error("cannot set supplementary groups: {0}")]
    Groups(nix::Error),
    /// setresgid/setresuid failed.
    #[error("cannot become {what} {id}: {error}")]
    Ids {
        /// "uid" or "gid".
        what: &'static str,
        /// The id asked for.
        id: u32,
        /// Why not.
        error: nix::Error,
    },
    /// A capability set could not be set.
    #[error("{0}")]
    Capabilities(#[from] crate::caps::CapsError),
    /// PR_SET_NO_NEW_PRIVS failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    /// The seccomp program was refused.
    #[error("cannot load the seccomp filter: {0}")]
    Seccomp(std::io::Error),
}

impl Confinement<'_> {
    /// Confines the calling process (thread, for the id and capability
    /// calls: the callers are single-threaded).
    pub fn apply(&self) -> Result<(), ConfineError> {
        if let Some(groups) = self.groups {
            let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
            nix::unistd::setgroups(&groups).map_err(ConfineError::Groups)?;
        }
        crate::caps::limit_bounding_set(self.capabilities)?;
        if let Some((uid, gid)) = self.ids {
            let g = Gid::from_raw(gid);
            nix::unistd::setresgid(g, g, g).map_err(|error| ConfineError::Ids {
                what: "gid",
                id: gid,
                error,
            })?;
            let u = Uid::from_raw(uid);
            nix::unistd::setresuid(u, u, u).map_err(|error| ConfineError::Ids {
                what: "uid",
                id: uid,
                error,
            })?;
        }
        crate::caps::set_process_capabilities(self.capabilities)?;
        match self.filter {
            Filter::Set(program) => set_filter(program),
            Filter::Inherited => Ok(()),
        }
    }
}

/// no_new_privs, then the seccomp program (when given).
pub fn set_filter(program: Option<&[u8]>) -> Result<(), ConfineError> {
    nix::sys::prctl::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;
    if let Some(program) = program {
        crate::sys::load_seccomp_program(program).map_err(ConfineError::Seccomp)?;
    }
    Ok(())
}
