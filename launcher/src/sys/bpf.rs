//! Loading BPF programs: the seccomp filter and the cgroup v2 device filter.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Loads a compiled seccomp BPF program (an array of `sock_filter`) for this
/// thread. no_new_privs must already be set.
pub fn load_seccomp_program(program: &[u8]) -> io::Result<()> {
    const FILTER_SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if program.is_empty()
        || !program.len().is_multiple_of(FILTER_SIZE)
        || program.len() / FILTER_SIZE > u16::MAX as usize
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed seccomp program",
        ));
    }
    // Copy into properly aligned storage.
    let filters: Vec<libc::sock_filter> = program
        .chunks_exact(FILTER_SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filters.len() as u16,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `filters`, which outlives the call; the kernel
    // copies the program before returning.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `bpf(BPF_PROG_LOAD)` of a `BPF_PROG_TYPE_CGROUP_DEVICE` program made of
/// `insns` (each one `struct bpf_insn` as a little-endian u64). When the
/// verifier refuses it, the load is retried with its log to say why.
pub fn load_device_filter(insns: &[u64]) -> io::Result<std::os::fd::OwnedFd> {
    bpf_prog_load_device(insns, None).or_else(|e| {
        let mut log = vec![0u8; 1 << 20];
        match bpf_prog_load_device(insns, Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0').trim();
                let tail = &text[text.len().saturating_sub(400)..];
                Err(io::Error::new(
                    e.kind(),
                    format!("cannot load the device filter: {e}; verifier: {tail}"),
                ))
            }
        }
    })
}

fn bpf_prog_load_device(insns: &[u64], log: Option<&mut [u8]>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    let license = c"GPL";
    // union bpf_attr, the BPF_PROG_LOAD part: prog_type, insn_cnt, insns,
    // license, log_level, log_size, log_buf (offsets 0, 4, 8, 16, 24, 28, 32).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    if let Some(log) = log {
        attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
        attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    }
    // SAFETY: attr is a zero-filled bpf_attr whose pointers (insns, license,
    // and log when given) stay valid for the call; the kernel writes at most
    // log_size bytes to log and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `bpf(BPF_PROG_ATTACH)` of a device filter to the cgroup directory
/// `cgroup`, alongside programs of its ancestors (`BPF_F_ALLOW_MULTI`).
pub fn attach_device_filter(cgroup: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    // union bpf_attr, the BPF_PROG_ATTACH part: target_fd, attach_bpf_fd,
    // attach_type, attach_flags.
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: attr is a zero-filled bpf_attr holding two descriptors that are
    // open for the duration of the call; nothing is written back.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
