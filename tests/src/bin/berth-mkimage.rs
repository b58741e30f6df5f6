//! Writes the demo/test image (an OCI layout built from Debian's busybox-static:
//! three layers, a whiteout, an opaque directory) into the directory given.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: berth-mkimage DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    if dir.exists() {
        eprintln!("berth-mkimage: {} already exists", dir.display());
        std::process::exit(1);
    }
    berth_e2e::write_standard_image(&dir);
    println!("{}", dir.display());
}
