//! Writes the demo/test image (an OCI layout built from Debian's busybox-static:
//! three layers, a whiteout, an opaque directory) into the directory given;
//! with `--big LAYERS FILES MIB`, a big image of that shape for benchmarks.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, big) = match args.as_slice() {
        // An option it does not know (`--help`) is not a directory name.
        [dir] if !dir.starts_with('-') => (dir, None),
        [flag, layers, files, mib, dir] if flag == "--big" => {
            let n = |s: &String| s.parse::<usize>().unwrap_or_else(|_| usage());
            (dir, Some((n(layers), n(files), n(mib))))
        }
        _ => usage(),
    };
    let dir = std::path::PathBuf::from(dir);
    if dir.exists() {
        eprintln!("berth-mkimage: {} already exists", dir.display());
        std::process::exit(1);
    }
    match big {
        None => berth_e2e::write_standard_image(&dir),
        Some((layers, files, mib)) => berth_e2e::write_big_image(&dir, layers, files, mib),
    }
    println!("{}", dir.display());
}

fn usage() -> ! {
    eprintln!("usage: berth-mkimage DIR | berth-mkimage --big LAYERS FILES MIB DIR");
    std::process::exit(2)
}
