//! A throw-away qemu guest (TCG: this machine's /dev/kvm cannot run one) with
//! a real cgroup v2 hierarchy, for the checks the host's cgroup v1 cannot
//! make. Debian's kernel boots a busybox initramfs that loads the virtio,
//! 9p and overlay modules, mounts the host's `/` read-only over 9p under a
//! tmpfs overlay (so the host-built test binaries run unchanged, wherever
//! the checkout is), gives scratch space on a tmpfs as `$TMPDIR`, mounts
//! cgroup2 (`cgroup_no_v1=all`) and runs one command; its output and exit
//! code come back through a writable 9p share.
//!
//! The kernel package is fetched once with `apt-get download` into
//! `target/berth-vm/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Modules the guest loads, in dependency order (Debian builds them as modules).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    "fs/netfs/netfs",
    "fs/fscache/fscache",
    "net/9p/9pnet",
    "net/9p/9pnet_virtio",
    "fs/9p/9p",
    "fs/overlayfs/overlay",
    "lib/crc16",
    "crypto/crc32c_generic",
    "fs/mbcache",
    "fs/jbd2/jbd2",
    "fs/ext4/ext4",
];

/// What the guest's command did.
pub struct VmOutcome {
    /// Its exit code (None: it never reported one).
    pub rc: Option<i32>,
    /// Its stdout and stderr.
    pub output: String,
    /// The guest's serial console (kernel and init messages).
    pub console: String,
}

/// Whether this process runs inside the guest.
pub fn in_vm() -> bool {
    std::env::var_os("BERTH_IN_VM").is_some()
}

/// The kernel and initramfs, made once per target directory.
fn assets() -> (PathBuf, PathBuf) {
    let dir = crate::target_root().join("berth-vm");
    std::fs::create_dir_all(&dir).unwrap();
    // One test binary at a time builds them.
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.cpio"));
    if kernel.exists() && initrd.exists() {
        return (kernel, initrd);
    }
    let package = sh(
        "apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'",
        &dir,
    );
    assert!(
        !package.is_empty(),
        "no Debian kernel package found (apt-get update?)"
    );
    let extract = dir.join("kernel");
    let _ = std::fs::remove_dir_all(&extract);
    sh(
        &format!(
            "rm -f linux-image-*.deb && apt-get download {package} >/dev/null 2>&1 && dpkg-deb -x linux-image-*.deb kernel && rm -f linux-image-*.deb"
        ),
        &dir,
    );
    let boot = std::fs::read_dir(extract.join("boot"))
        .expect("kernel package unpacked")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .expect("vmlinuz in the kernel package");
    let version = boot.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    let modules = extract.join("lib/modules").join(&version).join("kernel");
    let mut cpio = Cpio::default();
    for d in [
        "bin", "dev", "proc", "sys", "host", "rw", "newroot", "modules",
    ] {
        cpio.dir(d);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file(
        "bin/busybox",
        &std::fs::read("/bin/busybox").expect("busybox-static"),
        0o755,
    );
    for m in MODULES {
        let name = Path::new(m)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let data = std::fs::read(modules.join(format!("{m}.ko")))
            .unwrap_or_else(|e| panic!("module {m}.ko: {e}"));
        cpio.file(&format!("modules/{name}.ko"), &data, 0o644);
    }
    cpio.file("init", init_script().as_bytes(), 0o755);
    std::fs::write(&initrd, cpio.finish()).unwrap();
    std::fs::copy(&boot, &kernel).unwrap();
    let _ = std::fs::remove_dir_all(&extract);
    (kernel, initrd)
}

fn sh(script: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The initramfs's /init: modules, the host root under an overlay, then
/// the command script from the share.
fn init_script() -> String {
    let modules: Vec<String> = MODULES
        .iter()
        .map(|m| {
            Path::new(m)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /modules/$m.ko || echo "berth-vm: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || echo "berth-vm: 9p root failed"
mount -t tmpfs -o size=1G tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || echo "berth-vm: overlay failed"
mkdir -p /newroot/vmout
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmout /newroot/vmout
umount /proc /sys /dev
exec switch_root /newroot /bin/sh /vmout/stage2.sh
"#,
        modules = modules.join(" ")
    )
}

/// Runs `program ARGS` as root in a fresh guest, from `cwd`, with `env`.
pub fn run(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
    timeout: Duration,
) -> VmOutcome {
    let (kernel, initrd) = assets();
    let share = tempfile::Builder::new()
        .prefix("berth-vm-")
        .tempdir()
        .unwrap();
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut command = quote(&program.display().to_string());
    for a in args {
        command.push(' ');
        command.push_str(&quote(a));
    }
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect();
    let stage2 = format!(
        r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root BERTH_IN_VM=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /vmtmp
mount -t tmpfs -o size=1G tmpfs /vmtmp
chmod 1777 /vmtmp
export TMPDIR=/vmtmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
hostname berth-vm
{exports}cd {cwd}
{command} > /vmout/output 2>&1 < /dev/null
echo $? > /vmout/rc
sync
reboot -f
"#,
        cwd = quote(&cwd.display().to_string()),
    );
    std::fs::write(share.path().join("stage2.sh"), stage2).unwrap();
    // A scratch disk for the io.max check.
    let disk = share.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "2048",
            "-smp",
            "2",
        ])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 quiet cgroup_no_v1=all panic=-1 rdinit=/init",
        ])
        .args([
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        ])
        .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
        .arg("-fsdev")
        .arg(format!(
            "local,id=vmout,path={},security_model=none",
            share.path().display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=vmout,mount_tag=vmout"])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 missing: apt-get install qemu-system-x86");
    let console_out = qemu.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(console_out), &mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    while qemu.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = qemu.kill();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = qemu.wait();
    let mut console = reader.join().unwrap_or_default();
    if timed_out {
        let _ = writeln!(console, "\n[berth-vm: killed after {timeout:?}]");
    }
    let read = |name: &str| std::fs::read_to_string(share.path().join(name)).unwrap_or_default();
    VmOutcome {
        rc: read("rc").trim().parse().ok(),
        output: read("output"),
        console,
    }
}

/// A newc cpio archive (the initramfs format).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.entry(name, 0o100000 | mode, data, (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}
