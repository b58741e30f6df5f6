//! Generates the SPANK bindings from the `slurm/spank.h` and
//! `slurm/slurm_version.h` of the Slurm the plugin is built for, found in
//! `$SLURM_INCLUDE_DIR` (default /usr/include: Debian's libslurm-dev,
//! RHEL's slurm-devel); builds the static `berth-entrypoint` helper the
//! plugin carries.
//!
//! Slurm loads a plugin only when its `plugin_version` has Slurm's own
//! major.minor, so the headers decide which release the .so runs in. Only
//! with `BERTH_PREGENERATED_BINDINGS=1` (docs and lints on a machine without
//! Slurm's headers) are the checked-in 22.05 bindings used instead, and the
//! build says so.

use std::path::{Path, PathBuf};

/// The oldest and newest Slurm releases berth is built and tested for.
const SUPPORTED: ((u32, u32), (u32, u32)) = ((22, 5), (26, 5));

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=BERTH_PREGENERATED_BINDINGS");
    let include = PathBuf::from(
        std::env::var_os("SLURM_INCLUDE_DIR").unwrap_or_else(|| "/usr/include".into()),
    );
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    build_entrypoint_helper(&out_dir);
    let out = out_dir.join("spank_bindings.rs");
    let header = include.join("slurm/spank.h");
    let version_header = include.join("slurm/slurm_version.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed={}", version_header.display());
    if !header.exists() || !version_header.exists() {
        if std::env::var_os("BERTH_PREGENERATED_BINDINGS").is_some_and(|v| v == "1") {
            println!(
                "cargo:warning=no slurm/spank.h in {}: using the pre-generated Slurm 22.05 bindings (BERTH_PREGENERATED_BINDINGS=1); this plugin loads only in Slurm 22.05",
                include.display()
            );
            std::fs::copy("src/bindings_pregenerated.rs", &out)
                .expect("copy pre-generated bindings");
            println!("cargo:rustc-env=BERTH_SLURM_RELEASE=22.05");
            return;
        }
        fail(&format!(
            "{} or slurm_version.h is missing: install the headers of the Slurm the plugin will run in \
             (Debian/Ubuntu: apt install libslurm-dev; RHEL: dnf install slurm-devel) or point \
             SLURM_INCLUDE_DIR at the directory holding slurm/spank.h. \
             (For docs or lints only: BERTH_PREGENERATED_BINDINGS=1.)",
            header.display()
        ));
    }
    let release = slurm_release(&version_header);
    let (oldest, newest) = SUPPORTED;
    if release < oldest || release > newest {
        fail(&format!(
            "{} is Slurm {}.{:02}; berth supports Slurm {}.{:02} to {}.{:02}",
            version_header.display(),
            release.0,
            release.1,
            oldest.0,
            oldest.1,
            newest.0,
            newest.1
        ));
    }
    println!(
        "cargo:rustc-env=BERTH_SLURM_RELEASE={}.{:02}",
        release.0, release.1
    );
    let bindings = bindgen::Builder::default()
        .header_contents(
            "wrapper.h",
            "#include <slurm/spank.h>\n#include <slurm/slurm_version.h>\n",
        )
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("spank_.*")
        .allowlist_function("slurm_(info|error|debug|verbose)")
        .allowlist_type("spank_.*")
        .allowlist_var("SLURM_VERSION_NUMBER")
        .allowlist_var("ESPANK_.*")
        .rustified_enum("spank_context")
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen on {}: {e}", header.display())));
    bindings.write_to_file(&out).expect("write bindings");
}

/// Stops the build with `message`.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    std::process::exit(1)
}

/// The (major, minor) of `SLURM_VERSION_NUMBER` in slurm_version.h.
fn slurm_release(version_header: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(version_header)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", version_header.display())));
    let number = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#define SLURM_VERSION_NUMBER"))
        .find_map(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            fail(&format!(
                "no SLURM_VERSION_NUMBER in {}",
                version_header.display()
            ))
        });
    ((number >> 16) & 0xff, (number >> 8) & 0xff)
}

/// Builds `berth-entrypoint` (entrypoint/main.rs) as a static executable with
/// the same compiler: the plugin carries it and runs it inside containers
/// whose images may have no C library at all.
fn build_entrypoint_helper(out_dir: &Path) {
    println!("cargo:rerun-if-changed=entrypoint/main.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET is set for build scripts");
    let status = std::process::Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "berth_entrypoint",
            "--target",
        ])
        .arg(&target)
        .args([
            "-C",
            "target-feature=+crt-static",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "codegen-units=1",
            "-o",
        ])
        .arg(out_dir.join("berth-entrypoint"))
        .arg("entrypoint/main.rs")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run rustc for berth-entrypoint");
    assert!(
        status.success(),
        "building the static berth-entrypoint failed (is libc6-dev, with libc.a, installed?)"
    );
}
