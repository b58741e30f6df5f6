//! The image's files belong to the container's identity (enroot's way):
//! the user changes any of them in a writable container, and with
//! `--remap-root` is root over all of them; the node's store is not
//! touched (an idmapped mount of its layers, no copy).

use std::os::unix::fs::MetadataExt;

use berth_e2e::*;

use super::img;

/// What changes every file of the image and prints the owners it sees.
const CHANGE_ANYTHING: &str = "touch /newfile && rm /etc/motd && echo x >> /etc/passwd \
     && mkdir /root/mine && echo X=1 >> /etc/environment \
     && stat -c %u:%g / /etc/passwd /newfile /root/mine";

#[test]
fn a_user_may_change_any_file_of_the_image_root_run_and_rootless() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    let mine = format!("{uid}:{gid}\n").repeat(4);
    let (root_run, rootless) = super::both_ways(&s, &[&image, "sh", "-c", CHANGE_ANYTHING]);
    assert_eq!(root_run, mine, "berth --user {user}");
    assert_eq!(rootless, mine, "rootless berth");
    // The store's layer still has /etc/motd, root's, and nothing new.
    let (cat, _) = super::both_ways(&s, &[&image, "cat", "/etc/motd"]);
    assert_eq!(cat, "layer2\n");
    assert_store_layers_are_roots(&s);
}

#[test]
fn remap_root_is_root_over_every_file_of_the_image_root_run_and_rootless() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    let roots = "0:0\n".repeat(4);
    let (root_run, rootless) =
        super::both_ways(&s, &["--remap-root", &image, "sh", "-c", CHANGE_ANYTHING]);
    assert_eq!(root_run, roots, "berth --user --remap-root");
    assert_eq!(rootless, roots, "rootless berth --remap-root");
    assert_store_layers_are_roots(&s);
}

/// Root running a container for itself sees the files as they are (root's).
#[test]
fn root_for_itself_sees_the_image_as_root() {
    require_root!();
    let s = Sandbox::new();
    let image = img(&s);
    assert_eq!(
        ok(s.berth(&["run", &image, "stat", "-c", "%u:%g", "/etc/passwd"])),
        "0:0\n"
    );
}

/// Every entry of every layer in the root-run store is root's, and the
/// store is root's alone.
fn assert_store_layers_are_roots(s: &Sandbox) {
    let layers = s.store().join("layers/sha256");
    let mut stack = vec![layers.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (0, 0),
                "{}",
                entry.path().display()
            );
            seen += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(seen > 10, "no layer in {}", layers.display());
}
