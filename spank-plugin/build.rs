//! Generates the SPANK bindings from <slurm/spank.h> (libslurm-dev), or falls
//! back to the checked-in ones where the header is absent (docs, clippy);
//! builds the static `berth-entrypoint` helper the plugin carries.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let header = Path::new("/usr/include/slurm/spank.h");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    build_entrypoint_helper(&out_dir);
    let out = out_dir.join("spank_bindings.rs");
    if header.exists() {
        let bindings = bindgen::Builder::default()
            .header_contents(
                "wrapper.h",
                "#include <slurm/spank.h>\n#include <slurm/slurm_version.h>\n",
            )
            .allowlist_function("spank_.*")
            .allowlist_function("slurm_(info|error|debug|verbose)")
            .allowlist_type("spank_.*")
            .allowlist_var("SLURM_VERSION_NUMBER")
            .allowlist_var("ESPANK_.*")
            .rustified_enum("spank_context")
            .generate()
            .expect("bindgen on slurm/spank.h");
        bindings.write_to_file(&out).expect("write bindings");
    } else {
        println!(
            "cargo:warning=slurm/spank.h not found: using the pre-generated bindings (Slurm 22.05)"
        );
        std::fs::copy("src/bindings_pregenerated.rs", &out).expect("copy pre-generated bindings");
    }
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
