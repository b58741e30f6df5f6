//! Records which Slurm release's headers this build saw
//! (`$SLURM_INCLUDE_DIR`, default /usr/include): the SPANK plugin built
//! beside this binary is for that release, and `berth --version` says so.
//! Builds the static probe `berth verify` runs in containers.

fn main() {
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    let include = std::path::PathBuf::from(
        std::env::var_os("SLURM_INCLUDE_DIR").unwrap_or_else(|| "/usr/include".into()),
    );
    println!(
        "cargo:rerun-if-changed={}",
        include.join("slurm/slurm_version.h").display()
    );
    let release = slurm_conf::slurm_release::SlurmRelease::of_include_dir(&include)
        .map(|r| format!("built with the SPANK plugin for Slurm {r}"))
        .unwrap_or_else(|| "built without Slurm's headers: no SPANK plugin".into());
    println!("cargo:rustc-env=BERTH_BUILT_FOR={release}");
    // `berth verify`'s probe, run inside containers of any image.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    slurm_conf::static_program::build(
        "probe/main.rs",
        "berth_verify_probe",
        &out_dir.join("berth-verify-probe"),
    );
}
