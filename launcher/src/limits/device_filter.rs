//! The container's device allow-list for its cgroup: a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program on cgroup v2 (built here, loaded
//! and attached by [`crate::sys`]), `devices.deny`/`devices.allow` on v1.
//! Whatever the container's /dev holds, only these devices can be opened
//! (or created with mknod) by anything in it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One allowed device (or range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Character device (else block).
    pub char_device: bool,
    /// Major number, or None for any.
    pub major: Option<u32>,
    /// Minor number, or None for any.
    pub minor: Option<u32>,
    /// `r`, `w`, `m` as bits: 1 mknod, 2 read, 4 write (the kernel's order).
    pub access: u32,
}

/// Read and write (no mknod).
pub const RW: u32 = 2 | 4;

/// The devices every container's /dev holds: null, zero, full, random,
/// urandom, tty, console, ptmx and the devpts terminals.
pub fn base_rules() -> Vec<DeviceRule> {
    let c = |major, minor| DeviceRule {
        char_device: true,
        major: Some(major),
        minor,
        access: RW,
    };
    vec![
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(1)),
        c(5, Some(2)),
        c(136, None),
    ]
}

/// The rule for a host device file (a GPU, a CDI device node).
pub fn rule_for(path: &Path) -> std::io::Result<DeviceRule> {
    let meta = std::fs::metadata(path)?;
    let t = meta.file_type();
    if !t.is_char_device() && !t.is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a device", path.display()),
        ));
    }
    let rdev = meta.rdev();
    Ok(DeviceRule {
        char_device: t.is_char_device(),
        major: Some(nix::sys::stat::major(rdev) as u32),
        minor: Some(nix::sys::stat::minor(rdev) as u32),
        access: RW,
    })
}

// eBPF opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const MOV64_X: u8 = 0xbf; // dst = src
const MOV64_K: u8 = 0xb7; // dst = imm
const AND32_K: u8 = 0x54; // dst &= imm
const RSH32_K: u8 = 0x74; // dst >>= imm
const JNE_K: u8 = 0x55; // if dst != imm: pc += off
const JSET_K: u8 = 0x45; // if dst & imm: pc += off
const EXIT: u8 = 0x95;

/// `BPF_DEVCG_DEV_BLOCK` and `BPF_DEVCG_DEV_CHAR`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// The program: r1 is `struct bpf_cgroup_dev_ctx { u32 access_type; u32
/// major; u32 minor; }`; it returns 1 (allow) when a rule matches, else 0.
pub fn program(rules: &[DeviceRule]) -> Vec<u64> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),    // r2 = access_type
        insn(MOV64_X, 3, 2, 0, 0),      // r3 = r2
        insn(AND32_K, 3, 0, 0, 0xffff), // r3 = device type
        insn(RSH32_K, 2, 0, 0, 16),     // r2 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),    // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),    // r5 = minor
    ];
    for rule in rules {
        // Each test jumps past the rest of this rule when it fails.
        let mut tests: Vec<(u8, u8, i32)> = vec![(
            JNE_K,
            3,
            if rule.char_device {
                DEV_CHAR
            } else {
                DEV_BLOCK
            },
        )];
        let denied = !rule.access & 7;
        if denied != 0 {
            tests.push((JSET_K, 2, denied as i32));
        }
        if let Some(major) = rule.major {
            tests.push((JNE_K, 4, major as i32));
        }
        if let Some(minor) = rule.minor {
            tests.push((JNE_K, 5, minor as i32));
        }
        let n = tests.len();
        for (i, (code, reg, imm)) in tests.into_iter().enumerate() {
            // Remaining tests after this one, plus "r0 = 1; exit".
            let skip = (n - i - 1 + 2) as i16;
            p.push(insn(code, reg, 0, skip, imm));
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of the instructions `program` emits.
    fn run(p: &[u64], char_device: bool, major: u32, minor: u32, access: u32) -> u64 {
        let mut r = [0u64; 11];
        let ctx = [
            (if char_device { DEV_CHAR } else { DEV_BLOCK }) as u32 | (access << 16),
            major,
            minor,
        ];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (code, dst, src) = (
                i as u8,
                ((i >> 8) & 0xf) as usize,
                ((i >> 12) & 0xf) as usize,
            );
            let off = (i >> 16) as u16 as i16;
            let imm = (i >> 32) as u32 as i32;
            pc += 1;
            match code {
                LDX_MEM_W => r[dst] = u64::from(ctx[off as usize / 4]),
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = imm as i64 as u64,
                AND32_K => r[dst] = (r[dst] as u32 & imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> imm) as u64,
                JNE_K if r[dst] != imm as u32 as u64 => pc += off as usize,
                JSET_K if r[dst] & imm as u32 as u64 != 0 => pc += off as usize,
                JNE_K | JSET_K => {}
                EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn allows_only_the_listed_devices_and_access() {
        let mut rules = base_rules();
        rules.push(DeviceRule {
            char_device: true,
            major: Some(195),
            minor: Some(0),
            access: RW,
        });
        let p = program(&rules);
        assert_eq!(run(&p, true, 1, 3, RW), 1); // /dev/null
        assert_eq!(run(&p, true, 136, 7, 2), 1); // a pts
        assert_eq!(run(&p, true, 195, 0, 2), 1); // the allocated GPU
        assert_eq!(run(&p, true, 195, 1, 2), 0); // another GPU
        assert_eq!(run(&p, true, 1, 3, 1), 0); // mknod of /dev/null
        assert_eq!(run(&p, false, 1, 3, 2), 0); // a block device 1:3
        assert_eq!(run(&p, false, 8, 0, 2), 0); // a disk
    }
}
