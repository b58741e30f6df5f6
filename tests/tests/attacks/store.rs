//! The node's store: no poisoning, no planting, no layer for its digest alone, private images stay private (findings 2, 6, 7, 8).

use super::*;

/// squashfs images were hashed by path and extracted by path again: a user
/// who changed the file in between put a trojan in the store under a site
/// image's digest. Now the layer is extracted from a private copy and keyed
/// by that copy's digest. The user's file is swapped (rename exchange)
/// with a trojan thousands of times while root imports it again and again.
#[test]
fn a_squashfs_changed_during_import_never_poisons_the_store() {
    needs_root();
    let s = Sandbox::new();
    let dir = user_dir(&s, "squash");
    let make = |name: &str| {
        let file = s.path().join(format!("{name}.sqsh"));
        squashfs_image(&s, &file, name);
        std::fs::read(&file).unwrap()
    };
    let good = make("good");
    let trojan = make("trojan");
    let (good_hex, trojan_hex) = (sha256_of(&good), sha256_of(&trojan));
    let image = dir.join("site.sqsh");
    let other = dir.join("other.sqsh");
    std::fs::write(&image, &good).unwrap();
    std::fs::write(&other, &trojan).unwrap();
    chown_tree(&dir);

    let swapper = Swapper::start(&image, &other, None);
    let layers = s.store().join("layers/sha256");
    let mut runs = 0;
    while runs < 200 && (runs < 40 || swapper.swaps() < 5000) {
        runs += 1;
        let _ = run_for_user(
            &s,
            &[image.to_str().unwrap(), "/bin/busybox", "cat", "/marker"],
        );
        for (hex, marker) in [(&good_hex, "good"), (&trojan_hex, "trojan")] {
            let layer = layers.join(hex);
            if layer.exists() {
                assert_eq!(
                    std::fs::read_to_string(layer.join("marker")).unwrap(),
                    marker,
                    "the store holds other content under the {marker} image's digest"
                );
                std::fs::remove_dir_all(&layer).unwrap();
            }
        }
    }
    let swapped = swapper.stop(&image, &other, false);
    assert!(swapped >= 5000, "only {swapped} swaps in {runs} imports");
}

/// A whiteout named `.wh..` strips to `..`: the extractor removed the
/// store's tmp/ as root, with another user's extraction in it. Now such
/// whiteouts fail the layer and nothing outside it is touched.
#[test]
fn whiteouts_naming_nothing_dot_or_dotdot_are_refused() {
    needs_root();
    let s = Sandbox::new();
    ok(s.berth(&["images"])); // makes the store
    let sentinel = s.store().join("tmp/someone-elses-extraction");
    std::fs::create_dir_all(sentinel.join("inside")).unwrap();
    for hidden in ["", ".", ".."] {
        let top = Layer::new()
            .dir("a", 0o755)
            .file("a/file", b"x", 0o644)
            .whiteout("a", hidden);
        let image = s.image_on_base(&format!("wh{}", hidden.len()), top);
        chown_tree(&image);
        let out = run_for_user(&s, &[image.to_str().unwrap(), "true"]);
        assert!(!out.status.success(), "whiteout .wh.{hidden} accepted");
        assert!(
            stderr(&out).contains("whiteout"),
            ".wh.{hidden}: {}",
            stderr(&out)
        );
        assert!(
            sentinel.join("inside").is_dir(),
            ".wh.{hidden} removed something outside the layer"
        );
    }
}

/// Layer directories kept their tar modes on the host (a layer's /tmp
/// 1777): users planted files into lower layers, held the layers' lock
/// files and read image records. Now the store is root's alone.
#[test]
fn the_shared_store_is_roots_alone() {
    needs_root();
    let s = Sandbox::new();
    let image = s.standard_image();
    ok(run_for_user(&s, &[image.to_str().unwrap(), "true"]));
    let store = s.store();
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "store mode {mode:o}");
    let layer_tmp = std::fs::read_dir(store.join("layers/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("tmp"))
        .find(|p| p.is_dir())
        .expect("the base layer's /tmp");
    let lock = std::fs::read_dir(store.join("locks"))
        .unwrap()
        .flatten()
        .next()
        .expect("a lock file")
        .path();
    let record = std::fs::read_dir(store.join("images"))
        .unwrap()
        .flatten()
        .next()
        .map(|e| e.path());
    let (uid, gid) = test_user();
    let as_user = |script: &str, path: &Path| {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(path)
            .uid(uid)
            .gid(gid)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        !as_user("touch \"$1/planted\"", &layer_tmp),
        "a user wrote a layer"
    );
    assert!(!layer_tmp.join("planted").exists());
    assert!(
        !as_user("exec 3<\"$1\"", &lock),
        "a user opened a lock file"
    );
    if let Some(record) = record {
        assert!(
            !as_user("cat \"$1\" >/dev/null", &record),
            "a user read a record"
        );
    }
}

/// After one user pulled a private image with their credentials, a user
/// without any ran it from the node's cache. Now an image from a registry
/// anyone on the node may run (loopback, as here; `insecure` ones) is its
/// puller's alone: another user pulls their own with their credentials
/// (refused without); from an HTTPS registry a cached private image is
/// started for a user the registry lets pull it (within
/// `registry.auth_cache`), the same image (manifest digest) or pulled
/// again. A public image needs no question.
/// Held by the tests that write the test user's registry credentials.
static USER_CREDENTIALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_cached_private_image_is_only_for_users_who_may_pull_it() {
    needs_root();
    // The test user's credentials file is shared: one test at a time.
    let _credentials = USER_CREDENTIALS.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sandbox::new();
    let registry = berth_e2e::registry::Registry::start();
    let layout = s.standard_image();
    registry.push(&layout, "private/img:v1");
    registry.push(&layout, "public/img:v1");
    let gate = berth_e2e::registry::TokenGate::start(&registry, "alice", "s3cret");
    let private = format!("{}/private/img:v1", gate.host());
    let public = format!("{}/public/img:v1", registry.host());
    // Root pulls with its own credentials (from its HOME, not berth.toml).
    let root_home = s.path().join("root-home");
    std::fs::create_dir_all(root_home.join(".config/enroot")).unwrap();
    let netrc = format!("machine {} login alice password s3cret\n", gate.host());
    std::fs::write(root_home.join(".config/enroot/.credentials"), &netrc).unwrap();
    for reference in [&private, &public] {
        let out = s
            .berth_command(&["pull", reference])
            .env("HOME", &root_home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A user without credentials: the private image is not root's cached
    // one for them; their own pull is refused by the registry.
    let user_netrc = test_user_home().join(".config/enroot/.credentials");
    let _ = std::fs::remove_file(&user_netrc);
    let out = run_for_user(&s, &[&private, "cat", "/etc/motd"]);
    assert!(
        !out.status.success(),
        "ran a private image: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("authoriz") || stderr(&out).contains("authentication"),
        "{}",
        stderr(&out)
    );
    // With their own credentials they pull it, and then it is theirs.
    let dir = user_netrc.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    chown_tree(&test_user_home().join(".config"));
    std::fs::write(&user_netrc, &netrc).unwrap();
    chown_tree(&user_netrc);
    assert_eq!(
        ok(run_for_user(&s, &[&private, "cat", "/etc/motd"])),
        "layer2\n"
    );
    std::fs::remove_file(&user_netrc).unwrap();
    drop(gate);
    assert_eq!(
        ok(run_for_user(&s, &[&private, "cat", "/etc/motd"])),
        "layer2\n",
        "the user's own pull, from the cache"
    );
    // Root, whose pull it no longer is, pulls again: the registry is gone.
    let out = s
        .berth_command(&["run", &private, "true"])
        .env("HOME", &root_home)
        .output()
        .unwrap();
    assert!(!out.status.success(), "another puller's cached image ran");
    // The public one is the same image for everyone.
    assert_eq!(
        ok(run_for_user(&s, &[&public, "cat", "/etc/motd"])),
        "layer2\n"
    );
}

/// A layer already in the node's store was handed to anyone whose layout
/// named its digest: a user who learnt a private image's diff_ids got its
/// files without ever holding them. Now a user's layout or archive must
/// hold each layer it names (checked once per file version).
#[test]
fn naming_a_layers_digest_does_not_give_the_layer() {
    needs_root();
    let s = Sandbox::new();
    let secret = || Layer::new().file("secret", b"ROOT-ONLY-SECRET\n", 0o644);
    let closed = root_only_dir(&s, "closed");
    let layers = || {
        vec![
            (base_layer().finish(), Compression::Gzip),
            (secret().finish(), Compression::Gzip),
        ]
    };
    write_layout(&closed.join("image"), layers(), &RunConfig::default());
    let root_image = closed.join("image");
    assert_eq!(
        ok(s.berth(&["run", root_image.to_str().unwrap(), "cat", "/secret"])),
        "ROOT-ONLY-SECRET\n"
    );
    // The user's layout names the same layers, without the secret one's blob.
    let forged = user_dir(&s, "forged");
    write_layout(&forged, layers(), &RunConfig::default());
    let secret_blob = layout_layer_digests(&forged)[1].replace("sha256:", "");
    let blob = forged.join("blobs/sha256").join(secret_blob);
    let len = std::fs::metadata(&blob).unwrap().len() as usize;
    std::fs::write(&blob, vec![0u8; len]).unwrap();
    chown_tree(&forged);
    let out = run_for_user(&s, &[forged.to_str().unwrap(), "cat", "/secret"]);
    assert!(
        !stdout(&out).contains("ROOT-ONLY-SECRET"),
        "a layer was given for its digest alone"
    );
    assert!(!out.status.success());
    // With the real blob the user holds the layer, and may use it.
    let honest = user_dir(&s, "honest");
    write_layout(&honest, layers(), &RunConfig::default());
    chown_tree(&honest);
    assert_eq!(
        ok(run_for_user(
            &s,
            &[honest.to_str().unwrap(), "cat", "/secret"]
        )),
        "ROOT-ONLY-SECRET\n"
    );
}

/// The same through a registry (review of the image-ownership change): a
/// manifest naming layers the node's store already had gave them without a
/// download, so a user's own registry on loopback, listing another user's
/// private layers (their digests show in /proc's mountinfo), handed them
/// over; with the image's files now the container user's, even its 0600
/// files. Now a cached layer counts only for a repository seen holding it,
/// on a plain-HTTP registry only for the same user: otherwise the blob is
/// downloaded and must be the layer.
#[test]
fn a_registry_naming_a_layers_digest_does_not_give_the_layer() {
    needs_root();
    let s = Sandbox::new();
    let secret = || Layer::new().file("secret", b"ROOT-ONLY-SECRET\n", 0o600);
    let layers = || {
        vec![
            (base_layer().finish(), Compression::Gzip),
            (secret().finish(), Compression::Gzip),
        ]
    };
    let closed = root_only_dir(&s, "closed");
    write_layout(&closed.join("image"), layers(), &RunConfig::default());
    let root_image = closed.join("image");
    assert_eq!(
        ok(s.berth(&["run", root_image.to_str().unwrap(), "cat", "/secret"])),
        "ROOT-ONLY-SECRET\n"
    );
    // The user's registry lists the same layers but has not the secret
    // one's bytes (its blob is garbage of the same size).
    let registry = berth_e2e::registry::Registry::start();
    let forged = s.path().join("forged");
    write_layout(&forged, layers(), &RunConfig::default());
    registry.push(&forged, "forged:1");
    let secret_blob = registry.blob_path(&layout_layer_digests(&forged)[1]);
    let real = std::fs::read(&secret_blob).unwrap();
    std::fs::write(&secret_blob, vec![0u8; real.len()]).unwrap();
    let reference = format!("{}/forged:1", registry.host());
    let out = run_for_user(&s, &[&reference, "cat", "/secret"]);
    assert!(
        !stdout(&out).contains("ROOT-ONLY-SECRET"),
        "a layer was given for its digest in a manifest"
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("digest"), "{}", stderr(&out));
    // Holding the real blob, the user may use the layer (checked, not
    // extracted again), and from then on without a download.
    std::fs::write(&secret_blob, &real).unwrap();
    assert_eq!(
        ok(run_for_user(&s, &[&reference, "cat", "/secret"])),
        "ROOT-ONLY-SECRET\n"
    );
}

/// A registry on loopback answered the access check for a cached private
/// image (review of this stop's changes): root pulled it with credentials;
/// once that registry was gone, a user without credentials bound its port
/// with a server answering 200 to everything and started the image. Now
/// an image from a registry anyone may run is its puller's alone: anyone
/// else pulls their own, from whatever answers there.
#[test]
fn a_cached_private_loopback_image_is_not_given_to_whoever_answers_on_its_port() {
    needs_root();
    // The test user's credentials file is shared: one test at a time.
    let _credentials = USER_CREDENTIALS.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sandbox::new();
    let registry = berth_e2e::registry::Registry::start();
    registry.push(&s.standard_image(), "private/img:v1");
    let gate = berth_e2e::registry::TokenGate::start(&registry, "alice", "s3cret");
    let port = gate.port;
    let private = format!("{}/private/img:v1", gate.host());
    let root_home = s.path().join("root-home");
    std::fs::create_dir_all(root_home.join(".config/enroot")).unwrap();
    let netrc = format!("machine {} login alice password s3cret\n", gate.host());
    std::fs::write(root_home.join(".config/enroot/.credentials"), netrc).unwrap();
    let out = s
        .berth_command(&["pull", &private])
        .env("HOME", &root_home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_file(test_user_home().join(".config/enroot/.credentials"));
    let refused = run_for_user(&s, &[&private, "cat", "/etc/motd"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    // The registry's job ends; the user's own server takes the port.
    drop(gate);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the freed port");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 8192];
            let n = stream.read(&mut request).unwrap_or(0);
            let head = request[..n].starts_with(b"HEAD");
            let body = if head { "" } else { "{}" };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                 Docker-Content-Digest: sha256:{}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\
                 Content-Length: 2\r\nConnection: close\r\n\r\n{body}",
                "ab".repeat(32)
            );
        }
    });
    let out = run_for_user(&s, &[&private, "cat", "/etc/motd"]);
    assert!(
        !out.status.success() && !stdout(&out).contains("layer2"),
        "the private image ran for the user: {}",
        stdout(&out)
    );
    // Root, who pulled it, still starts it from the cache.
    assert_eq!(
        ok(s.berth_command(&["run", &private, "cat", "/etc/motd"])
            .env("HOME", &root_home)
            .output()
            .unwrap()),
        "layer2\n"
    );
}
