//! `spank_berth.so`: runs every task of a Slurm step in a berth container.
//!
//! Loaded by srun/sbatch (options, validation before the job is queued) and
//! by slurmstepd (the container). Every hook goes through [`choke_point`]: a
//! panic never unwinds into Slurm, and errors become one `berth:` line. No
//! threads or async runtime run here: the heavy work (image pull, building
//! the root filesystem) is done by the `berth` binary in a helper process.
//!
//! In slurmstepd, remote-context `init` never fails on user input or config
//! errors (that would drain the node): they are recorded and raised in
//! `task_init_privileged`, which fails only the tasks.
//!
//! `unsafe` code is fenced in `ffi.rs` and in the exported symbols below
//! (Slurm finds them by name).
#![deny(unsafe_code)]

mod entrypoint;
#[allow(unsafe_code)]
mod ffi;
mod helper;
mod named;
mod options;
mod relay;
mod remote;
mod start;
mod state;

use std::ffi::{c_char, c_int};
use std::sync::Mutex;

use slurm_conf::plugstack::PlugstackArgs;

use options::{Values, OPTIONS};

/// The plugin's name, as Slurm reads it.
#[allow(unsafe_code)]
#[no_mangle]
pub static plugin_name: [u8; 6] = *b"berth\0";
/// The plugin type: a SPANK plugin.
#[allow(unsafe_code)]
#[no_mangle]
pub static plugin_type: [u8; 6] = *b"spank\0";
/// The Slurm version the plugin was built against.
#[allow(unsafe_code)]
#[no_mangle]
pub static plugin_version: u32 = ffi::SLURM_VERSION_NUMBER;
/// The SPANK plugin interface version.
#[allow(unsafe_code)]
#[no_mangle]
pub static spank_plugin_version: u32 = 1;
/// What a failing `slurm_spank_init` of this required plugin does, from
/// Slurm 25.05 on: `ESPANK_JOB_FAILURE` (3012) fails the job instead of
/// draining the node. Older releases never look the symbol up.
#[allow(unsafe_code)]
#[no_mangle]
pub static slurm_spank_init_failure_mode: c_int = 3012;

/// The Slurm release whose headers the plugin was built with (build.rs):
/// the only release it loads in.
pub const BUILT_FOR_SLURM: &str = env!("BERTH_SLURM_RELEASE");

/// What the plugin knows in this process.
#[derive(Default)]
struct State {
    /// plugstack.conf arguments, or the error they gave.
    args: Option<Result<PlugstackArgs, String>>,
    /// Option values from the command line (callbacks).
    values: Values,
    /// Errors from option callbacks, raised later in the remote context.
    deferred_errors: Vec<String>,
    /// Set once this task joined a container: the seccomp program to load.
    joined: Option<remote::Joined>,
    /// The error this task fails with was shown by another task of the
    /// step on the node: it is not repeated.
    error_shown: bool,
    /// In slurmstepd: the highest exit status of the step's tasks on this
    /// node so far (128+N for a signal), for the audit trail.
    tasks_exit: Option<i32>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(State::default))
}

/// Runs a hook: catches panics, logs errors through Slurm, returns the code.
fn choke_point(hook: &str, f: impl FnOnce() -> Result<(), String>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            if !with_state(|s| std::mem::take(&mut s.error_shown)) {
                ffi::error(&format!("berth: {message}"));
            }
            -1
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ffi::error(&format!("berth: internal error in {hook}: {what}"));
            -1
        }
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn option_callback(val: c_int, optarg: *const c_char, remote: c_int) -> c_int {
    // SAFETY: Slurm passes NULL or the option's NUL-terminated argument.
    let value = unsafe { ffi::optarg(optarg) };
    choke_point("option", || {
        let result = with_state(|s| s.values.set(val as usize, value));
        match (result, remote != 0) {
            (Ok(()), _) => Ok(()),
            // Never fail in slurmstepd: the task will report it.
            (Err(e), true) => {
                with_state(|s| s.deferred_errors.push(e));
                Ok(())
            }
            (Err(e), false) => Err(e),
        }
    })
}

/// `slurm_spank_init`: registers the options; in slurmstepd, reads the plugstack arguments.
///
/// # Safety
/// Called by Slurm with a valid handle and `ac` strings in `av`.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_init(
    sp: ffi::spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    // SAFETY: Slurm passes the plugstack line's `ac` arguments in `av`.
    let args = unsafe { ffi::args(ac, av) };
    let context = ffi::context();
    ffi::verbose(&format!(
        "berth: spank_berth.so {} built for Slurm {BUILT_FOR_SLURM}",
        env!("CARGO_PKG_VERSION")
    ));
    choke_point("init", || {
        let parsed = PlugstackArgs::parse(&args).map_err(|e| e.to_string());
        with_state(|s| s.args = Some(parsed.clone()));
        if matches!(
            context,
            ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR | ffi::Context::S_CTX_REMOTE
        ) {
            for (i, option) in OPTIONS.iter().enumerate() {
                if !ffi::register_option(
                    sp,
                    option.name,
                    option.arginfo,
                    option.usage,
                    i as i32,
                    option_callback,
                ) {
                    ffi::info(&format!("berth: cannot register --{}", option.name));
                }
            }
        }
        match (parsed, context) {
            // An admin error: say so where a user sees it, but never drain the node.
            (Err(e), ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR) => Err(e),
            (Err(e), _) => {
                ffi::error(&format!("berth: {e}"));
                Ok(())
            }
            _ => Ok(()),
        }
    })
}

/// `slurm_spank_init_post_opt`: in srun/sbatch, checks the option values
/// (and their environment variables) before anything is queued.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_init_post_opt(
    _sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    let context = ffi::context();
    choke_point("init_post_opt", || {
        if !matches!(
            context,
            ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR
        ) {
            return Ok(());
        }
        with_state(|s| {
            s.values.fill_from_env(|k| std::env::var(k).ok());
            s.values.parse().map(drop)
        })
    })
}

/// `slurm_spank_task_init_privileged`: the task (still root) joins the
/// step's container, creating it if it is the first task on this node.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init_privileged(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    choke_point("task_init_privileged", || remote::task_init_privileged(sp))
}

/// `slurm_spank_task_init`: as the user, just before exec: the entrypoint
/// helper, no_new_privs and seccomp.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    choke_point("task_init", || remote::task_init(sp))
}

/// `slurm_spank_exit`: in slurmstepd, ends the step's container.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_exit(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    in_slurmstepd("exit", || remote::step_exit(sp))
}

/// Runs a hook that only slurmstepd has work for (and that never fails).
fn in_slurmstepd(hook: &str, f: impl FnOnce()) -> c_int {
    if ffi::context() != ffi::Context::S_CTX_REMOTE {
        return 0;
    }
    choke_point(hook, || {
        f();
        Ok(())
    })
}

/// `slurm_spank_task_exit`: in slurmstepd, as each task ends: its exit
/// status, kept for the container's end in the audit trail.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_exit(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    in_slurmstepd("task_exit", || {
        if let Some(code) = ffi::task_exit_code(sp) {
            with_state(|s| s.tasks_exit = Some(s.tasks_exit.map_or(code, |c| c.max(code))));
        }
    })
}

/// `slurm_spank_job_epilog`: removes whatever containers of the job are left
/// (a slurmstepd killed with SIGKILL never ran its exit hook).
///
/// # Safety
/// Called by Slurm with a valid handle.
#[allow(unsafe_code)]
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_job_epilog(
    sp: ffi::spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    // SAFETY: Slurm passes the plugstack line's `ac` arguments in `av`.
    let args = unsafe { ffi::args(ac, av) };
    choke_point("job_epilog", || {
        // Never fail: a failing epilog drains the node.
        remote::job_epilog(sp, &PlugstackArgs::parse(&args).unwrap_or_default());
        Ok(())
    })
}
