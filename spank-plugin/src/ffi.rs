//! The SPANK C interface: generated bindings and the safe wrappers the rest
//! of the plugin uses. Every `unsafe` block of the plugin is in this file.
//! The `spank_*` and `slurm_*` symbols come from the host process (srun,
//! sbatch or slurmstepd): the plugin does not link libslurm.

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
#[allow(clippy::all, clippy::undocumented_unsafe_blocks)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/spank_bindings.rs"));
}

use std::ffi::{c_char, c_int, CStr, CString};

pub use bindings::{spank_context as Context, spank_t, SLURM_VERSION_NUMBER};

/// A SPANK option callback.
pub type OptionCallback = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;

/// The context the plugin runs in.
pub fn context() -> Context {
    // SAFETY: spank_context takes no arguments and only reads host state.
    unsafe { bindings::spank_context() }
}

fn cstring(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

/// Logs through Slurm at info level (shown in slurmd logs, and by srun with -v).
pub fn info(message: &str) {
    let m = cstring(message);
    // SAFETY: a constant "%s" format with one valid NUL-terminated argument.
    unsafe { bindings::slurm_info(c"%s".as_ptr(), m.as_ptr()) }
}

/// Logs through Slurm at verbose level (slurmd's log at `-v`, srun -v).
pub fn verbose(message: &str) {
    let m = cstring(message);
    // SAFETY: a constant "%s" format with one valid NUL-terminated argument.
    unsafe { bindings::slurm_verbose(c"%s".as_ptr(), m.as_ptr()) }
}

/// Logs an error through Slurm (srun prints it to the user).
pub fn error(message: &str) {
    let m = cstring(message);
    // SAFETY: a constant "%s" format with one valid NUL-terminated argument.
    unsafe { bindings::slurm_error(c"%s".as_ptr(), m.as_ptr()) }
}

/// Registers one option. The strings are leaked: Slurm keeps the pointers.
pub fn register_option(
    sp: spank_t,
    name: &str,
    arginfo: Option<&str>,
    usage: &str,
    val: i32,
    cb: OptionCallback,
) -> bool {
    let leak = |s: &str| cstring(s).into_raw();
    let mut option = bindings::spank_option {
        name: leak(name),
        arginfo: arginfo.map(leak).unwrap_or(std::ptr::null_mut()),
        usage: leak(usage),
        has_arg: arginfo.is_some() as c_int,
        val,
        cb: Some(cb),
    };
    // SAFETY: sp is the handle Slurm gave this hook; `option` is a valid
    // spank_option whose strings live forever (leaked); Slurm copies the struct.
    unsafe {
        bindings::spank_option_register(sp, &mut option)
            == bindings::ESPANK_SUCCESS as bindings::spank_err_t
    }
}

/// Reads a numeric item (uid, gid, job id, step id, task counts).
fn get_u32(sp: spank_t, item: bindings::spank_item_t) -> Option<u32> {
    let mut value: u32 = 0;
    // SAFETY: for these items spank_get_item takes one pointer to a 32-bit
    // integer (uid_t, gid_t, uint32_t and int all are), which is valid.
    let rc = unsafe { bindings::spank_get_item(sp, item, &mut value as *mut u32) };
    (rc == bindings::ESPANK_SUCCESS as bindings::spank_err_t).then_some(value)
}

/// The exit code of the task that just ended (in `task_exit`): its code,
/// or 128+N when signal N killed it.
pub fn task_exit_code(sp: spank_t) -> Option<i32> {
    let status = get_u32(sp, bindings::spank_item_S_TASK_EXIT_STATUS)? as i32;
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// The job's uid.
pub fn job_uid(sp: spank_t) -> Option<u32> {
    get_u32(sp, bindings::spank_item_S_JOB_UID)
}

/// The job's gid.
pub fn job_gid(sp: spank_t) -> Option<u32> {
    get_u32(sp, bindings::spank_item_S_JOB_GID)
}

/// The job's supplementary groups, as Slurm gives them to its tasks
/// (empty where Slurm says nothing).
pub fn job_supplementary_gids(sp: spank_t) -> Vec<u32> {
    let mut gids: *mut libc::gid_t = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: S_JOB_SUPPLEMENTARY_GIDS takes a gid_t** and an int* to fill;
    // both are valid.
    let rc = unsafe {
        bindings::spank_get_item(
            sp,
            bindings::spank_item_S_JOB_SUPPLEMENTARY_GIDS,
            &mut gids as *mut *mut libc::gid_t,
            &mut count as *mut c_int,
        )
    };
    if rc != bindings::ESPANK_SUCCESS as bindings::spank_err_t || gids.is_null() || count <= 0 {
        return vec![];
    }
    // SAFETY: Slurm's array holds `count` gids and stays Slurm's.
    unsafe { std::slice::from_raw_parts(gids, count as usize) }.to_vec()
}

/// The job id.
pub fn job_id(sp: spank_t) -> Option<u32> {
    get_u32(sp, bindings::spank_item_S_JOB_ID)
}

/// The step id (batch and extern steps have special values).
pub fn step_id(sp: spank_t) -> Option<u32> {
    get_u32(sp, bindings::spank_item_S_JOB_STEPID)
}

/// The step id of a batch script (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP: u32 = 0xffff_fffb;

/// The argv Slurm holds for the step (in a task hook: the argv the task
/// will exec), as Slurm's own array.
fn raw_argv(sp: spank_t) -> Option<(c_int, *mut *mut c_char)> {
    let mut argc: c_int = 0;
    let mut argv: *mut *mut c_char = std::ptr::null_mut();
    // SAFETY: S_JOB_ARGV takes an int* and a char*** to fill; both are valid.
    let rc = unsafe {
        bindings::spank_get_item(
            sp,
            bindings::spank_item_S_JOB_ARGV,
            &mut argc as *mut c_int,
            &mut argv as *mut *mut *mut c_char,
        )
    };
    (rc == bindings::ESPANK_SUCCESS as bindings::spank_err_t && !argv.is_null())
        .then_some((argc, argv))
}

/// The job's argv (the batch script's path in the batch step).
pub fn job_argv(sp: spank_t) -> Vec<String> {
    // SAFETY: Slurm's argv of the job: `argc` strings.
    raw_argv(sp).map_or_else(Vec::new, |(argc, argv)| unsafe { args(argc, argv) })
}

/// A variable of the job's environment (remote context).
pub fn getenv(sp: spank_t, name: &str) -> Option<String> {
    let n = cstring(name);
    let mut buf = vec![0u8; 65536];
    // SAFETY: n is NUL-terminated, buf is writable for the length passed;
    // Slurm NUL-terminates what it writes.
    let rc = unsafe {
        bindings::spank_getenv(sp, n.as_ptr(), buf.as_mut_ptr().cast(), buf.len() as c_int)
    };
    if rc != bindings::ESPANK_SUCCESS as bindings::spank_err_t {
        return None;
    }
    CStr::from_bytes_until_nul(&buf)
        .ok()
        .map(|c| c.to_string_lossy().into_owned())
}

/// Sets a variable of the job's environment (remote context).
pub fn setenv(sp: spank_t, name: &str, value: &str, overwrite: bool) -> bool {
    let (n, v) = (cstring(name), cstring(value));
    // SAFETY: both strings are NUL-terminated; Slurm copies them.
    unsafe {
        bindings::spank_setenv(sp, n.as_ptr(), v.as_ptr(), overwrite as c_int)
            == bindings::ESPANK_SUCCESS as bindings::spank_err_t
    }
}

/// Removes a variable from the job's environment (remote context).
pub fn unsetenv(sp: spank_t, name: &str) -> bool {
    let n = cstring(name);
    // SAFETY: the name is NUL-terminated; Slurm copies what it needs.
    unsafe {
        bindings::spank_unsetenv(sp, n.as_ptr())
            == bindings::ESPANK_SUCCESS as bindings::spank_err_t
    }
}

/// The names of the job's environment variables (remote context).
pub fn job_env_names(sp: spank_t) -> Vec<String> {
    let mut env: *mut *mut c_char = std::ptr::null_mut();
    // SAFETY: S_JOB_ENV takes a char*** to fill; it is valid.
    let rc = unsafe {
        bindings::spank_get_item(
            sp,
            bindings::spank_item_S_JOB_ENV,
            &mut env as *mut *mut *mut c_char,
        )
    };
    if rc != bindings::ESPANK_SUCCESS as bindings::spank_err_t || env.is_null() {
        return vec![];
    }
    let mut names = vec![];
    for i in 0.. {
        // SAFETY: Slurm's environment array ends with a NULL pointer.
        let entry = unsafe { *env.add(i) };
        if entry.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated `NAME=value` string.
        let text = unsafe { CStr::from_ptr(entry) }.to_string_lossy();
        if let Some((name, _)) = text.split_once('=') {
            names.push(name.to_string());
        }
    }
    names
}

/// The plugin's arguments from plugstack.conf.
///
/// # Safety
/// `av` must hold `ac` pointers, each NULL or a NUL-terminated string (as
/// Slurm passes them to a hook).
pub unsafe fn args(ac: c_int, av: *mut *mut c_char) -> Vec<String> {
    (0..ac.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: `av` holds `ac` pointers (the contract above).
            let p = unsafe { *av.add(i) };
            // SAFETY: each is NULL or a NUL-terminated string.
            unsafe { optarg(p) }
        })
        .collect()
}

/// A C string argument of an option callback.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that lives for the call.
pub unsafe fn optarg(p: *const c_char) -> Option<String> {
    // SAFETY: NULL or a NUL-terminated string (the contract above).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}
