//! berth's launcher: everything that builds and runs a job container.
//!
//! The flow is one-way: an image source is resolved into layer directories
//! ([`image`]), the caller builds a [`spec::ContainerSpec`], and
//! [`process::run`] starts it: namespaces ([`idmap`]), root filesystem
//! ([`rootfs`]), capabilities ([`caps`]), seccomp ([`seccomp`]).
//! All `unsafe` code is in [`sys`]; the few callers of its `unsafe fn`s
//! (fork, clone, taking a raw descriptor) say why each call holds.
#![deny(unsafe_code)]

pub mod as_user;
pub mod audit;
pub mod caps;
pub mod gpu;
pub mod idmap;
pub mod image;
pub mod limits;
pub mod login;
pub mod mounts;
pub mod process;
pub mod root_dir;
pub mod rootfs;
pub mod seccomp;
pub mod slurm;
pub mod spec;
pub mod sys;
pub mod syscall;
