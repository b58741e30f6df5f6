#![allow(clippy::undocumented_unsafe_blocks)] // a test probe: each unsafe block is one raw syscall whose outcome is the point
//! A tiny program copied into test images: it tries one privileged operation
//! and prints `OK` or the errno name, so tests can check what the container
//! may do.

use std::ffi::CString;

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOKEY => "ENOKEY".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::EROFS => "EROFS".into(),
        libc::ENXIO => "ENXIO".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::ESRCH => "ESRCH".into(),
        other => format!("errno {other}"),
    }
}

fn result(ret: libc::c_long) -> String {
    if ret == -1 {
        errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        "OK".into()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let out = match arg(0).as_str() {
        // SAFETY (all below): plain syscalls with valid or null arguments; the
        // point is only to see whether the kernel lets them through.
        "keyctl" => result(unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                0,  /* KEYCTL_GET_KEYRING_ID */
                -3, /* session */
                0,
            )
        }),
        "add_key" => {
            let t = CString::new("user").unwrap();
            let d = CString::new("berth").unwrap();
            result(unsafe {
                libc::syscall(
                    libc::SYS_add_key,
                    t.as_ptr(),
                    d.as_ptr(),
                    d.as_ptr(),
                    5usize,
                    -3,
                )
            })
        }
        "kexec_load" => result(unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0) }),
        "open_by_handle_at" => {
            result(unsafe { libc::syscall(libc::SYS_open_by_handle_at, libc::AT_FDCWD, 0, 0) })
        }
        "init_module" => result(unsafe { libc::syscall(libc::SYS_init_module, 0, 0, 0) }),
        "finit_module" => result(unsafe { libc::syscall(libc::SYS_finit_module, -1, 0, 0) }),
        "unshare_user" => result(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as libc::c_long),
        "unshare_mount" => result(unsafe { libc::unshare(libc::CLONE_NEWNS) } as libc::c_long),
        "mount_tmpfs" => {
            let (s, t, f) = (
                CString::new("none").unwrap(),
                CString::new(arg(1)).unwrap(),
                CString::new("tmpfs").unwrap(),
            );
            result(
                unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) }
                    as libc::c_long,
            )
        }
        "umount" => {
            let t = CString::new(arg(1)).unwrap();
            result(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } as libc::c_long)
        }
        "sethostname" => result(unsafe { libc::sethostname(c"evil".as_ptr(), 4) } as libc::c_long),
        "mknod" => {
            let p = CString::new(arg(1)).unwrap();
            result(
                unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 1)) }
                    as libc::c_long,
            )
        }
        "setuid0" => result(unsafe { libc::setuid(0) } as libc::c_long),
        "chroot" => result(unsafe { libc::chroot(c"/tmp".as_ptr()) } as libc::c_long),
        "ids" => {
            let (mut r, mut e, mut s) = (0, 0, 0);
            unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
            let (mut gr, mut ge, mut gs) = (0, 0, 0);
            unsafe { libc::getresgid(&mut gr, &mut ge, &mut gs) };
            format!("uid={r},{e},{s} gid={gr},{ge},{gs}")
        }
        "open" => {
            let p = CString::new(arg(1)).unwrap();
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR) };
            result(fd as libc::c_long)
        }
        // Allocates and touches MiB one MiB at a time (an OOM kill stops it).
        "alloc" => {
            let mib: usize = arg(1).parse().unwrap_or(64);
            let mut held = Vec::new();
            for _ in 0..mib {
                held.push(vec![1u8; 1 << 20]);
            }
            format!("allocated {}", held.len())
        }
        // Forks up to N children that wait, counts them, then ends them.
        "forks" => {
            let n: usize = arg(1).parse().unwrap_or(100);
            let mut children = Vec::new();
            for _ in 0..n {
                match unsafe { libc::fork() } {
                    0 => {
                        unsafe { libc::pause() };
                        unsafe { libc::_exit(0) };
                    }
                    -1 => break,
                    pid => children.push(pid),
                }
            }
            for pid in &children {
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
            }
            format!("forked {}", children.len())
        }
        // Spins for SECONDS of wall time; prints the CPU time it got, in ms.
        "spin" => {
            let secs: f64 = arg(1).parse().unwrap_or(2.0);
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
            let ms = usage.ru_utime.tv_sec * 1000 + usage.ru_utime.tv_usec / 1000;
            format!("cpu_ms {ms}")
        }
        "sleep" => {
            println!("ready");
            std::thread::sleep(std::time::Duration::from_secs(arg(1).parse().unwrap_or(60)));
            "done".into()
        }
        // Pushes a character into the terminal on stdin (TIOCSTI).
        "tiocsti" => {
            let c = b'#';
            result(unsafe { libc::ioctl(0, libc::TIOCSTI, &c) } as libc::c_long)
        }
        // Whether a controlling terminal is there (/dev/tty opens).
        "ctty" => {
            let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR) };
            result(fd as libc::c_long)
        }
        // Whether this process's group is its terminal's foreground group.
        "foreground" => {
            let (fg, own) = unsafe { (libc::tcgetpgrp(0), libc::getpgrp()) };
            if fg == own {
                "FG".into()
            } else {
                format!("BG (group {own}, foreground {fg})")
            }
        }
        // Tries to attach to process PID with ptrace (detaches when it can).
        "ptrace" => {
            let pid: libc::pid_t = arg(1).parse().unwrap_or(1);
            let ret = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
            let out = result(ret);
            if ret == 0 {
                unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
            }
            out
        }
        // Counts deliveries of signal N (a real-time one queues every copy,
        // so a duplicate shows): says "ready", waits for the first (up to
        // 20 s), then 1 s more, and prints the count.
        "count-signal" => {
            static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            extern "C" fn counted(_: libc::c_int) {
                COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let signo: libc::c_int = arg(1).parse().unwrap_or(libc::SIGUSR1);
            unsafe { libc::signal(signo, counted as *const () as libc::sighandler_t) };
            println!("ready");
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while COUNT.load(std::sync::atomic::Ordering::SeqCst) == 0
                && std::time::Instant::now() < give_up
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            format!(
                "signal {signo} x{}",
                COUNT.load(std::sync::atomic::Ordering::SeqCst)
            )
        }
        // Reads a file and prints its first line (or the errno).
        "read" => match std::fs::read_to_string(arg(1)) {
            Ok(text) => format!("READ {}", text.lines().next().unwrap_or_default()),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        },
        // Listens on 127.0.0.1 and connects to itself: whether loopback works.
        "loopback" => match std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| std::net::TcpStream::connect(listener.local_addr()?))
        {
            Ok(_) => "LOOPBACK".into(),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        },
        other => {
            eprintln!("berth-probe: unknown probe {other:?}");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
