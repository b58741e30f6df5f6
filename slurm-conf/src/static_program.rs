//! For build scripts: a small static program (one Rust file, std only)
//! built with the compiler building the crate, for running inside
//! containers whose images may have no C library at all (the plugin's
//! `berth-entrypoint`, `berth verify`'s probe).

use std::path::Path;

/// Builds `source` (relative to the crate) as a static executable `out`
/// named `crate_name`, and tells cargo to rebuild when it changes.
pub fn build(source: &str, crate_name: &str, out: &Path) {
    println!("cargo:rerun-if-changed={source}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET is set for build scripts");
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2021", "--crate-name", crate_name, "--target"])
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
        .arg(out)
        .arg(source)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustc for {crate_name}: {e}"));
    assert!(
        status.success(),
        "building the static {crate_name} failed (is libc6-dev, with libc.a, installed?)"
    );
}
