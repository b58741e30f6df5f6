//! Runs one shell command in the cgroup v2 test guest: `cargo run -p
//! berth-e2e --example vm_shell -- 'cat /proc/cmdline'` (as root).

fn main() {
    let script = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cat /sys/fs/cgroup/cgroup.controllers".into());
    let out = berth_e2e::vm::run(
        std::path::Path::new("/bin/sh"),
        &["-c", &script],
        &[],
        std::path::Path::new("/"),
        std::time::Duration::from_secs(300),
    );
    println!(
        "--- console\n{}\n--- output\n{}--- rc {:?}",
        out.console, out.output, out.rc
    );
}
