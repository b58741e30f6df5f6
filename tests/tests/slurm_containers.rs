//! Containers users change under Slurm: the image's files are the job
//! user's (root's with `--container-remap-root`), and `--container-save`
//! packs what the container showed, as root's (enroot's export).

use std::os::unix::fs::MetadataExt;

use berth_e2e::slurm::cluster_with_standard_image;
use berth_e2e::*;

#[test]
fn a_tasks_user_may_change_any_file_of_the_image_and_remap_root_owns_them_all() {
    require_root!();
    let (_s, cluster, image) = cluster_with_standard_image();
    let image_opt = format!("--container-image={image}");
    let (uid, gid) = test_user();
    let change = "touch /newfile && rm /etc/motd && echo x >> /etc/passwd && \
                  stat -c %u:%g / /etc/passwd /newfile";
    let out = cluster.srun(&[&image_opt, "--container-writable", "sh", "-c", change]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), format!("{uid}:{gid}\n").repeat(3));
    let out = cluster.srun(&[
        &image_opt,
        "--container-remap-root",
        "sh",
        "-c",
        "echo X=1 >> /etc/environment && mkdir -p /var/lib/mine && \
         stat -c %u:%g /etc/environment /etc/passwd /var/lib/mine",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), "0:0\n".repeat(3));
    // Each step had its own writable layer: the image is as it was.
    let out = cluster.srun(&[
        &image_opt,
        "sh",
        "-c",
        "cat /etc/motd; test -e /newfile || echo no-newfile",
    ]);
    assert_eq!(stdout(&out), "layer2\nno-newfile\n", "{}", stderr(&out));
}

#[test]
fn a_saved_container_is_roots_in_the_image_and_the_next_users_in_a_container() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let (uid, gid) = test_user();
    let out_dir = shared_dir(&s, "saved");
    std::os::unix::fs::chown(&out_dir, Some(uid), None).unwrap();
    let saved = out_dir.join("changed.sqsh");
    let out = cluster.srun(&[
        &format!("--container-image={image}"),
        &format!("--container-save={}", saved.display()),
        "--container-remap-root",
        "sh",
        "-c",
        "mkdir -p /opt/tool && echo v1 > /opt/tool/version && echo changed > /etc/motd",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    wait_until("the squashfs is written", || saved.exists());
    assert_eq!(std::fs::metadata(&saved).unwrap().uid(), uid);
    // Every entry of the image is root's (what unsquashfs lists).
    let listing = std::process::Command::new("unsquashfs")
        .args(["-lln", "-d", ""])
        .arg(&saved)
        .output()
        .unwrap();
    let listing = stdout(&listing);
    let owners: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(owners.len() > 10, "{listing}");
    assert!(owners.iter().all(|o| *o == "0/0"), "{listing}");
    // Started again (a new job), the files are that container's user's.
    let out = cluster.srun(&[
        &format!("--container-image={}", saved.display()),
        "sh",
        "-c",
        "cat /opt/tool/version /etc/motd; stat -c %u:%g /opt/tool/version; echo v2 > /opt/tool/version",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), format!("v1\nchanged\n{uid}:{gid}\n"));
}

/// What pyxis users do most: install a package as (remapped) root, here a
/// local .deb through apt (its privilege drop to `_apt`, locks under
/// /var/lib, the dpkg database: all the image's root's files).
#[test]
fn remap_root_installs_a_package_with_apt_in_a_debian_image() {
    require_root!();
    let (s, cluster, _) = cluster_with_standard_image();
    let pkgs = shared_dir(&s, "pkgs");
    write_hello_deb(&pkgs.join("berth-hello_1.0_all.deb"));
    let out = remap_root_in_debian(
        &s,
        &cluster,
        &[&format!("--container-mounts={}:/pkgs:ro", pkgs.display())],
        "apt-get install -y /pkgs/berth-hello_1.0_all.deb > /tmp/apt.log 2>&1 \
         || { cat /tmp/apt.log; exit 1; }; grep -c '^E:' /tmp/apt.log; \
         berth-hello; dpkg-query -W -f '${Status}\\n' berth-hello",
    );
    assert_eq!(out, "0\nhello from a package\ninstall ok installed\n");
}

/// Runs `script` as a remapped-root task in a Debian image the tests build
/// (with `options` too, e.g. a mount) and returns what it printed; the
/// task must succeed.
fn remap_root_in_debian(
    s: &Sandbox,
    cluster: &berth_e2e::slurm::Cluster,
    options: &[&str],
    script: &str,
) -> String {
    let debian = s.path().join("debian");
    write_debian_image(&debian);
    let image = format!("--container-image={}", debian.display());
    let mut args = vec![image.as_str(), "--container-remap-root"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["sh", "-c", script]);
    let out = cluster.srun(&args);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        cluster.logs()
    );
    stdout(&out)
}

/// `apt-get update && apt-get install -y file` from Debian's archive (the
/// one `scripts/slurm-roots.sh` made the image's root from, so reachable
/// wherever these tests could be set up): apt's warnings are fine, its
/// errors are not.
#[test]
fn remap_root_apt_get_update_and_install_from_debians_archive() {
    require_root!();
    let (s, cluster, _) = cluster_with_standard_image();
    let out = remap_root_in_debian(
        &s,
        &cluster,
        &[],
        "{ apt-get update && apt-get install -y file; } > /tmp/apt.log 2>&1 \
         || { cat /tmp/apt.log; exit 1; }; grep '^E:' /tmp/apt.log; file -b /bin/dash | cut -d, -f1",
    );
    assert_eq!(out, "ELF 64-bit LSB pie executable\n");
}

/// A running step's own (unnamed) container is joined as `JOBID.STEPID`
/// (pyxis's name for it), from another job of its user, not by another
/// user: the joining step sees its files and processes.
#[test]
fn a_running_steps_container_is_joined_as_jobid_stepid_by_its_user_only() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let mut first = cluster.srun_in_background(&[
        "-J",
        "first",
        &format!("--container-image={image}"),
        "sh",
        "-c",
        "echo $$ > /tmp/mark; exec sleep 300",
    ]);
    let job = || {
        let out = cluster
            .command("squeue")
            .args(["-h", "-t", "R", "-n", "first", "-o", "%i"])
            .output()
            .unwrap();
        stdout(&out).trim().to_string()
    };
    wait_until("the first step runs in its container", || {
        !job().is_empty() && berth_e2e::slurm::keepers_of(&s) == 1
    });
    let name = format!("--container-name={}.0", job());
    // The same user, from a job of their own.
    let out = cluster.srun(&[
        &name,
        "sh",
        "-c",
        // The first step's shell may not have exec'd its sleep yet.
        "for i in $(seq 100); do c=$(tr '\\0' ' ' < /proc/$(cat /tmp/mark)/cmdline); \
         [ \"$c\" = 'sleep 300 ' ] && break; sleep 0.1; done; printf %s \"$c\"",
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), "sleep 300 ");
    // Not to be made or replaced under that name.
    let out = cluster.srun(&[&format!("{name}:create"), "true"]);
    assert!(
        stderr(&out).contains("can only be joined"),
        "{}",
        stderr(&out)
    );
    // Another user (root's own job here) is told there is no such container.
    let out = cluster
        .command("srun")
        .args([&name, "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no running container of step"),
        "{}",
        stderr(&out)
    );
    let _ = first.kill();
    let _ = first.wait();
}

/// SIGKILL of the slurmstepd of the step that made a named container
/// leaves the container usable: its keeper belongs to the job, not to that
/// step, and a later step finds its files.
#[test]
fn a_named_container_outlives_a_killed_slurmstepd_of_the_step_that_made_it() {
    require_root!();
    let (s, cluster, image) = cluster_with_standard_image();
    let dir = shared_dir(&s, "kill9");
    let body = format!(
        "echo $SLURM_JOB_ID > {dir}/job\n\
         srun --container-name=c1 --container-image={image} --container-mounts={dir}:/shared \
              sh -c 'echo kept > /tmp/state; touch /shared/started; exec sleep 300' &\n\
         while [ ! -e {dir}/go ]; do sleep 0.2; done\n\
         kill $!\n\
         srun --overlap --container-name=c1:exec cat /tmp/state\n",
        dir = dir.display()
    );
    let text = std::thread::scope(|scope| {
        let job = scope.spawn(|| cluster.batch(&dir, &body));
        wait_until("the first step runs", || dir.join("started").exists());
        let job_id = std::fs::read_to_string(dir.join("job")).unwrap();
        let stepd = cluster
            .stepd(&format!("slurmstepd: [{}.0]", job_id.trim()))
            .expect("the first step's slurmstepd");
        // SAFETY: kill on the pid of this test cluster's slurmstepd.
        unsafe { libc::kill(stepd, libc::SIGKILL) };
        std::fs::write(dir.join("go"), "").unwrap();
        job.join().unwrap()
    });
    // Only the later step prints (srun of the killed step adds its notes).
    assert!(text.lines().any(|l| l == "kept"), "{text}");
    // The job's end (epilog) removes the container.
    wait_until("the named container is gone", || {
        berth_e2e::slurm::keepers_of(&s) == 0
    });
}
