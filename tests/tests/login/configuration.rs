//! What the admin configures: who is let in (and refused, naming why),
//! idle stop, Slurm from the container, per-group and per-user entries.

use super::*;

#[test]
fn a_user_or_directory_not_as_configured_is_refused() {
    require_root!();
    let site = Site::new("");
    // A data directory others can read.
    set_mode(&site.data_dir(1), 0o755);
    let server = site.start();
    let (code, text) = ssh(&site, &server, 1, "echo in");
    assert_eq!(code, 125, "{text}");
    assert!(
        text.contains("must have mode 0700 (it has 0755)")
            && text.contains(&site.data_dir(1).display().to_string()),
        "{text}"
    );
    assert!(!text.contains("in\n"), "{text}");
    drop(server);
    // A user sshd lets in whom [login] does not list.
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    let unlisted = config.replace(&format!(", \"{}\"]", site.user(1)), "]");
    assert_ne!(config, unlisted);
    std::fs::write(site.s.config(), unlisted).unwrap();
    let server = site.start();
    let (code, text) = ssh(&site, &server, 1, "echo in");
    assert_eq!(code, 125, "{text}");
    assert!(text.contains("has no container on this host"), "{text}");
    // Both refusals are in the trail, with their reasons; nothing started.
    let trail = site.login_trail();
    let reasons: Vec<&str> = trail
        .iter()
        .filter(|r| r["event"] == "start_failed" && r["user"] == site.user(1))
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{trail:#?}");
    assert!(reasons[0].contains("must have mode 0700"), "{reasons:?}");
    assert!(reasons[1].contains("has no container"), "{reasons:?}");
    assert!(!trail.iter().any(|r| r["event"] == "start"), "{trail:#?}");
}

#[test]
fn an_idle_container_stops_after_idle_stop() {
    require_root!();
    let site = Site::new("");
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    std::fs::write(
        site.s.config(),
        config.replace("idle_stop = \"1h\"", "idle_stop = \"2s\""),
    )
    .unwrap();
    let server = site.start();
    assert_eq!(ssh(&site, &server, 0, "true").0, 0, "{}", server.logs());
    let running = || stdout(&site.s.berth(&["ps", "--user", site.user(0)])).contains("running");
    assert!(running(), "running right after the session");
    wait_until("the idle container stops", || !running());
    let trail = site.login_trail();
    let end = trail
        .iter()
        .find(|r| r["event"] == "end")
        .expect("an end record");
    assert!(end["duration_ms"].as_u64().unwrap() >= 2000, "{end}");
}

/// With `[login] slurm = true`, Slurm's client in the login container
/// (Debian's, in the image) reaches the cluster: the munge socket and
/// Slurm's configuration are bound in, SLURM_CONF set where it is not the
/// default. Without it, neither is there.
#[test]
fn slurm_works_from_a_login_container_when_enabled() {
    require_root!();
    let s = Sandbox::new();
    let image = s.path().join("debian");
    write_debian_image(&image);
    let site = Site::with_image(s, &image, "slurm = true");
    let cluster = berth_e2e::slurm::Cluster::start(&site.s.config());
    let conf = cluster.conf();
    let server = LoginServer::start_with_env(
        &site.s,
        &[site.user(0), site.user(1)],
        &[("SLURM_CONF", &conf)],
    );
    let (code, text) = ssh(
        &site,
        &server,
        0,
        "srun -n1 --chdir=/tmp echo from-srun; squeue -h -u $USER -o %u; echo squeue=$?",
    );
    assert_eq!(code, 0, "{text}\n{}\n{}", server.logs(), cluster.logs());
    assert!(text.contains("from-srun\n"), "{text}");
    assert!(text.contains("squeue=0"), "{text}");
    drop(server);
    drop(cluster);
    // Not enabled: no munge socket, no Slurm configuration.
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    std::fs::write(site.s.config(), config.replace("slurm = true", "")).unwrap();
    let server = LoginServer::start_with_env(&site.s, &[site.user(0)], &[("SLURM_CONF", &conf)]);
    let out = server.stop_container(site.user(0));
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, text) = ssh(
        &site,
        &server,
        0,
        &format!("ls /run/munge {} 2>&1; echo done", conf.display()),
    );
    assert!(
        text.contains("No such file") && text.ends_with("done\n"),
        "{text}"
    );
}

/// `@GROUP` in `[login] users` lets a group's members in; `[login.user.NAME]`
/// and `[login.group.NAME]` change one user's or a group's container (here:
/// where sessions start, and a read-only dataset only they get).
#[test]
fn a_group_lists_users_and_overrides_change_their_container() {
    require_root!();
    let site = Site::new("");
    let datasets = site.s.path().join("datasets");
    std::fs::create_dir(&datasets).unwrap();
    std::fs::write(datasets.join("imagenet.txt"), "a dataset\n").unwrap();
    let config = std::fs::read_to_string(site.s.config()).unwrap();
    let listed_by_group = config.replace(
        &format!("\"{}\"]", site.user(1)),
        &format!("\"@{}\"]", site.user(1)),
    );
    assert_ne!(config, listed_by_group);
    std::fs::write(
        site.s.config(),
        format!(
            "{listed_by_group}\n[login.group.{group}]\nworkdir = \"/workspace/data\"\n\
             [[login.user.{user}.mounts]]\nsource = \"{datasets}\"\ndestination = \"/datasets\"\nread_only = true\n",
            group = site.user(1),
            user = site.user(1),
            datasets = datasets.display()
        ),
    )
    .unwrap();
    let server = site.start();
    let (code, text) = ssh(
        &site,
        &server,
        1,
        "pwd; cat /datasets/imagenet.txt; touch /datasets/x 2>&1 || echo read-only",
    );
    assert_eq!(code, 0, "{text}\n{}", server.logs());
    assert_eq!(text.lines().next(), Some("/workspace/data"), "{text}");
    assert!(
        text.contains("a dataset\n") && text.ends_with("read-only\n"),
        "{text}"
    );
    let (_, text) = ssh(&site, &server, 0, "pwd; ls /datasets 2>&1");
    assert!(
        text.starts_with("/workspace\n") && text.contains("No such file"),
        "{text}"
    );
}
