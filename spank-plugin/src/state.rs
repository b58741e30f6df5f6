//! Where the plugin keeps a container's state on the node (root's only):
//! `<runtime_dir>/slurm/<job>.<step>/` for a step's container (or a step's
//! view into a named one), `<runtime_dir>/slurm/<job>.name.<NAME>/` for a
//! named container; in each, `lock` (flock: one task creates the
//! container, the others wait) and `keeper.json` (its `KeeperRecord`); in
//! a step's, also `start.lock` (the step's tasks reach its container one
//! at a time) and `failed` (why they could not, said once).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth::slurm::record::KeeperRecord;
use slurm_conf::plugstack::PlugstackArgs;

/// A step's own state directory.
pub(crate) fn step_dir(args: &PlugstackArgs, job: u32, step: u32) -> PathBuf {
    args.runtime_dir.join("slurm").join(format!("{job}.{step}"))
}

/// Where a container's state lives: per job for a named container, per step otherwise.
pub(crate) fn container_dir(
    args: &PlugstackArgs,
    name: Option<&str>,
    job: u32,
    step: u32,
) -> PathBuf {
    match name {
        Some(name) => args
            .runtime_dir
            .join("slurm")
            .join(format!("{job}.name.{name}")),
        None => step_dir(args, job, step),
    }
}

/// Makes a state directory (root only).
pub(crate) fn make_state_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// The record in a state directory, whether or not its keeper still runs.
pub(crate) fn recorded_keeper(dir: &Path) -> Option<KeeperRecord> {
    KeeperRecord::read(&dir.join("keeper.json"))
}

/// The record in a state directory, if its keeper still runs.
pub(crate) fn live_keeper(dir: &Path) -> Option<KeeperRecord> {
    recorded_keeper(dir).filter(KeeperRecord::is_alive)
}

/// Notes whose container a state directory is for (`uid`), before it is
/// made: a join by another user is told apart without waiting on its lock.
pub(crate) fn record_owner(dir: &Path, uid: u32) -> Result<(), String> {
    let path = dir.join("uid");
    std::fs::write(&path, uid.to_string())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The user a state directory's container is for, if noted.
pub(crate) fn owner_of(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("uid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records a keeper in a state directory.
pub(crate) fn record_keeper(dir: &Path, record: &KeeperRecord) -> Result<(), String> {
    let path = dir.join("keeper.json");
    record
        .write(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes a state directory (root only) and takes its lock (`lock`):
/// waits while another task of the step works on the container.
pub(crate) fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    lock_state_dir_file(dir, "lock")
}

/// `lock_state_dir` with the lock file `name`.
pub(crate) fn lock_state_dir_file(
    dir: &Path,
    name: &str,
) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    make_state_dir(dir)?;
    let file = std::fs::File::create(dir.join(name))
        .map_err(|e| format!("cannot create the step lock: {e}"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the step: {e}"))
}
