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

/// The job's uid.
pub fn job_uid(sp: spank_t) -> Option<u32> {
    get_u32(sp, bindings::spank_item_S_JOB_UID)
}

/// The job's gid.
pub fn job_gid(sp: spank_t) -> Option<u32> {
    get_u32(sp, bindings::spank_item_S_JOB_GID)
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

/// Puts `program` in the place of the task's argv[0] (task_init, in the
/// task's own process: Slurm execs that argv next) and returns what was
/// there. The list itself cannot grow: Slurm owns it.
pub fn replace_task_argv0(sp: spank_t, program: &str) -> Option<String> {
    let (argc, argv) = raw_argv(sp).filter(|(argc, _)| *argc >= 1)?;
    // SAFETY: Slurm's argv of the task: `argc` (>= 1) strings.
    let old = unsafe { args(argc.min(1), argv) }.into_iter().next()?;
    // SAFETY: argv has argc >= 1 valid entries; the old string stays Slurm's
    // (not freed), the new one is leaked: this process execs right after.
    unsafe { *argv = cstring(program).into_raw() };
    Some(old)
}

/// `spank_prepend_task_argv` (Slurm 23.11+) with `args`: None where the
/// running Slurm lacks it. Looked up at run time: the plugin is linked with
/// BIND_NOW, so a direct reference would stop it loading in older releases.
pub fn prepend_task_argv(sp: spank_t, args: &[String]) -> Option<bool> {
    type Prepend =
        unsafe extern "C" fn(spank_t, c_int, *mut *const c_char) -> bindings::spank_err_t;
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"spank_prepend_task_argv".as_ptr()) };
    if symbol.is_null() {
        return None;
    }
    // SAFETY: the symbol Slurm exports under this name has spank.h's signature.
    let prepend: Prepend = unsafe { std::mem::transmute::<*mut libc::c_void, Prepend>(symbol) };
    let strings: Vec<CString> = args.iter().map(|a| cstring(a)).collect();
    let mut pointers: Vec<*const c_char> = strings.iter().map(|c| c.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: `pointers` holds args.len() valid NUL-terminated strings and a
    // final NULL; Slurm copies the strings before this returns.
    let rc = unsafe { prepend(sp, args.len() as c_int, pointers.as_mut_ptr()) };
    Some(rc == bindings::ESPANK_SUCCESS as bindings::spank_err_t)
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
