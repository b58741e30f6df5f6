//! Doing one thing with another user's rights: root acting for a user (a
//! mount source, a credentials file, an output path) checks or touches the
//! file as that user, in a forked child, so the kernel's permission checks
//! (and a symlink the user planted) apply to the user, not to root.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};

/// Runs `f` in a child process that has taken `uid`, `gid` and `groups`;
/// true when the ids could be taken and `f` returned true. The caller must
/// be single-threaded; `f` should only make system calls.
pub fn as_user(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> bool) -> bool {
    match crate::sys::fork() {
        Ok(ForkResult::Child) => {
            let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
            let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
            let ok = nix::unistd::setgroups(&groups).is_ok()
                && nix::unistd::setresgid(g, g, g).is_ok()
                && nix::unistd::setresuid(u, u, u).is_ok()
                && f();
            crate::sys::exit_child(if ok { 0 } else { 1 })
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

/// Reads `path` (at most 60 KiB, what a pipe holds while the parent waits:
/// credential files are small) with the user's rights.
pub fn read_as_user(path: &std::path::Path, uid: u32, gid: u32) -> Option<String> {
    use std::io::Read;
    let (r, w) = nix::unistd::pipe().ok()?;
    let read = as_user(uid, gid, &[], || {
        let mut data = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(60 * 1024).read_to_end(&mut data))
            .is_ok()
            && nix::unistd::write(&w, &data).is_ok()
    });
    drop(w);
    let mut text = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut text);
    (read && !text.is_empty()).then_some(text)
}
