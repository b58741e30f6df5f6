//! A filesystem image file (a named container's writable layer) mounted
//! through a loop device: the device is attached with `LOOP_CONFIGURE`
//! and `LO_FLAGS_AUTOCLEAR` (it goes when its last mount does), and the
//! filesystem made into a detached mount with `fsopen`/`fsmount`, to be
//! attached inside a container's mount namespace only.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::path_cstring;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The loop devices whose backing file is `image` (by its path, as the
/// kernel shows it in `/sys/block/loopN/loop/backing_file`).
pub fn loop_devices_backing(image: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return vec![];
    };
    let wanted = image.as_os_str().to_string_lossy().into_owned();
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|f| f.trim_end() == wanted)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect()
}

/// Attaches `image` (opened read-write) to a free loop device that clears
/// itself once nothing holds it: the device, open.
fn attach_loop(image: &File) -> io::Result<(PathBuf, File)> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    // Another process may take the free device first: try again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        // SAFETY: an all-zero loop_config is valid (no offset, no limit).
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads one loop_config, which lives for the call.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc == 0 {
            return Ok((path, device));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EBUSY) {
            return Err(error);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "no free loop device after 16 tries",
    ))
}

/// Mounts the ext4 filesystem in `image` (a root-owned file, never
/// following a symbolic link) as a detached mount, nosuid and nodev: to
/// be attached with `move_mount` where it belongs. The loop device goes
/// when the last mount of it does.
pub fn mount_ext4_image(image: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(image)?;
    let (device_path, device) = attach_loop(&file)?;
    let mounted = fsmount_ext4(&device_path);
    // The filesystem (if made) holds the device now; closing this last
    // other opener is what lets an unused device clear itself.
    drop(device);
    mounted
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// `fsconfig(2)` setting `key` (to `value`, for a string) on context `fs`.
fn fsconfig(
    fs: &OwnedFd,
    command: libc::c_uint,
    key: &std::ffi::CStr,
    value: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
    // SAFETY: the key (and value, when given) are NUL-terminated and live
    // for the call; a flag takes no value (NULL).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            command,
            key.as_ptr(),
            value,
            0,
        )
    };
    match rc < 0 {
        true => Err(io::Error::last_os_error()),
        false => Ok(()),
    }
}

/// `fsconfig(2)`'s create command: the filesystem is made from the context.
fn fsconfig_create(fs: &OwnedFd) -> io::Result<()> {
    // SAFETY: CMD_CREATE takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    match rc < 0 {
        true => Err(io::Error::last_os_error()),
        false => Ok(()),
    }
}

/// `fsopen("ext4")`, its source, `fsmount`.
fn fsmount_ext4(device: &Path) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
    let source = path_cstring(device)?;
    let fstype = CString::new("ext4").expect("no NUL");
    // SAFETY: fsopen takes a NUL-terminated name; a new fd or -1 comes back.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fs` is a new descriptor this function owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as libc::c_int) };
    fsconfig(&fs, FSCONFIG_SET_STRING, c"source", Some(&source))?;
    // No background zeroing of the inode tables (the kernel's lazy init
    // thread): it would fill the sparse file with some 160 MB of zeros per
    // 10 GB of layer; unused tables are marked uninitialised instead.
    fsconfig(&fs, FSCONFIG_SET_FLAG, c"noinit_itable", None)?;
    fsconfig_create(&fs)?;
    // SAFETY: fsmount on a created filesystem context; a new fd or -1.
    let mount = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if mount < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `mount` is a new descriptor, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(mount as libc::c_int) })
}
