//! The few raw system calls nix does not wrap. Every `unsafe` block of the
//! launcher lives in this module: `process`, `mount`, `disk`, `net`,
//! `bpf`, `terminal`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::path::Path;

fn path_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

mod bpf;
mod disk;
mod mount;
mod net;
mod process;
mod terminal;

pub use bpf::*;
pub use disk::*;
pub use mount::*;
pub use net::*;
pub use process::*;
pub use terminal::*;
