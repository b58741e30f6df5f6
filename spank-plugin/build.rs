//! Generates the SPANK bindings from <slurm/spank.h> (libslurm-dev), or falls
//! back to the checked-in ones where the header is absent (docs, clippy).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let header = Path::new("/usr/include/slurm/spank.h");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("spank_bindings.rs");
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
