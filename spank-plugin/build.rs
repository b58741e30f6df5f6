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

use slurm_conf::slurm_release::{SlurmRelease, SUPPORTED};

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
    let release = SlurmRelease::of_include_dir(&include).unwrap_or_else(|| {
        fail(&format!(
            "no SLURM_VERSION_NUMBER in {}",
            version_header.display()
        ))
    });
    if !release.is_supported() {
        fail(&format!(
            "{} is Slurm {release}; berth supports Slurm {} to {}",
            version_header.display(),
            SUPPORTED.0,
            SUPPORTED.1
        ));
    }
    println!("cargo:rustc-env=BERTH_SLURM_RELEASE={release}");
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

/// Builds `berth-entrypoint` (entrypoint/main.rs) as a static executable:
/// the plugin carries it and runs it inside containers whose images may
/// have no C library at all.
fn build_entrypoint_helper(out_dir: &Path) {
    slurm_conf::static_program::build(
        "entrypoint/main.rs",
        "berth_entrypoint",
        &out_dir.join("berth-entrypoint"),
    );
}
