//! MPI across nodes in berth containers: two slurmd nodes on this machine
//! (see the test kit's slurm/nodes.rs), Slurm's PMI2 and PMIx plugins, and
//! a real Open MPI program and mpi4py in an image of Debian's Open MPI
//! packages (`bookworm-mpi`, made by scripts/slurm-roots.sh).

use std::path::{Path, PathBuf};

use berth_e2e::slurm::{Cluster, Tracking};
use berth_e2e::*;

/// The Open MPI image: a Debian 12 root with openmpi-bin and python3-mpi4py.
fn mpi_image() -> PathBuf {
    let root = Path::new(berth_e2e::releases::ROOTS_DIR).join("bookworm-mpi");
    assert!(
        root.join("usr/bin/mpirun").exists(),
        "{} has no Open MPI: run scripts/slurm-roots.sh (scripts/test.sh does)",
        root.display()
    );
    root
}

/// tests/mpi/hello.c compiled with the host's mpicc (Debian 12's Open MPI,
/// as in the image) into the sandbox.
fn mpi_hello(s: &Sandbox) -> PathBuf {
    let program = s.path().join("mpi-hello");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("mpi/hello.c");
    let out = std::process::Command::new("mpicc")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .output()
        .expect("mpicc missing: apt-get install libopenmpi-dev");
    assert!(out.status.success(), "{}", stderr(&out));
    program
}

/// Sorted output lines.
fn sorted(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines
}

/// As pyxis's mpi.bats: with `--mpi=pmix` every rank has its PMIx
/// variables and the PMIx server's directory (bound in at the same path);
/// with `--mpi=pmi2` its PMI_FD socket and PMI variables; on both nodes.
#[test]
fn pmix_and_pmi2_reach_every_rank_on_every_node() {
    require_root!();
    let s = Sandbox::new();
    let image = s.path().join("pmix-env-image");
    write_layout(
        &image,
        vec![(base_layer().finish(), Compression::Gzip)],
        &RunConfig {
            env: vec!["PATH=/bin".into(), "PMIX_MCA_gds=the-images".into()],
            ..Default::default()
        },
    );
    let cluster = Cluster::start_nodes(&s.config(), 2, Tracking::Pgid);
    // Slurm's PMIx plugin loads (it needs Debian's libpmix2).
    let out = cluster.srun(&["--mpi=list"]);
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("pmix"),
        "{}",
        stderr(&out)
    );
    let image_opt = format!("--container-image={}", image.display());
    // The server's shared-memory stores and the clients' directory, bound
    // in from the node; the client modules set to the server's (as
    // enroot's PMIx hook does), over the image's own.
    let pmix = format!(
        "ls $PMIX_SERVER_TMPDIR | grep -q '^pmix_dstor_' \
         && ls -d {}/nodes/$(hostname)/tmp/spmix_appdir_{}_* >/dev/null \
         && [ -n \"$PMIX_MCA_psec\" ] && [ \"$PMIX_MCA_psec\" = \"$PMIX_SECURITY_MODE\" ] \
         && [ -n \"$PMIX_MCA_gds\" ] && [ \"$PMIX_MCA_gds\" = \"$PMIX_GDS_MODULE\" ] \
         && echo $PMIX_RANK $(hostname) $PMIX_NAMESPACE server-dir-ok",
        cluster.dir().display(),
        test_user().0
    );
    let out = cluster.srun(&[&image_opt, "--mpi=pmix", "-N2", "-n4", "sh", "-c", &pmix]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = stdout(&out);
    let job = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert!(job.starts_with("slurm.pmix."), "{text}");
    assert_eq!(
        sorted(&text),
        [
            format!("0 berthnode1 {job} server-dir-ok"),
            format!("1 berthnode1 {job} server-dir-ok"),
            format!("2 berthnode2 {job} server-dir-ok"),
            format!("3 berthnode2 {job} server-dir-ok"),
        ],
        "{text}"
    );
    let pmi2 = "readlink /proc/self/fd/$PMI_FD | grep -q '^socket:' && echo $PMI_RANK of $PMI_SIZE $(hostname)";
    let out = cluster.srun(&[&image_opt, "--mpi=pmi2", "-N2", "-n4", "sh", "-c", pmi2]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(
        sorted(&stdout(&out)),
        [
            "0 of 4 berthnode1",
            "1 of 4 berthnode1",
            "2 of 4 berthnode2",
            "3 of 4 berthnode2"
        ],
        "{}",
        stdout(&out)
    );
}

/// A real Open MPI program in containers on two nodes with `--mpi=pmix`:
/// every rank knows its rank, the size and its node, and an allreduce over
/// the four ranks (shared memory within a node, TCP between nodes) sums
/// 1+2+3+4; mpi4py does the same from Python.
#[test]
fn open_mpi_ranks_find_each_other_across_two_nodes() {
    require_root!();
    let s = Sandbox::new();
    let hello = mpi_hello(&s);
    let cluster = Cluster::start_nodes(&s.config(), 2, Tracking::Pgid);
    let image_opt = format!("--container-image={}", mpi_image().display());
    let mount = format!(
        "--container-mounts={}:/usr/local/bin/mpi-hello:ro",
        hello.display()
    );
    let out = cluster.srun(&[&image_opt, &mount, "--mpi=pmix", "-N2", "-n4", "mpi-hello"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(
        sorted(&stdout(&out)),
        [
            "rank 0 of 4 on berthnode1 sum 10",
            "rank 1 of 4 on berthnode1 sum 10",
            "rank 2 of 4 on berthnode2 sum 10",
            "rank 3 of 4 on berthnode2 sum 10",
        ],
        "{}",
        stderr(&out)
    );
    let python = "from mpi4py import MPI; import socket; c = MPI.COMM_WORLD; \
                  print('py', c.Get_rank(), c.Get_size(), socket.gethostname(), c.allreduce(c.Get_rank() + 1))";
    let out = cluster.srun(&[
        &image_opt,
        "--mpi=pmix",
        "-N2",
        "-n4",
        "python3",
        "-c",
        python,
    ]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(
        sorted(&stdout(&out)),
        [
            "py 0 4 berthnode1 10",
            "py 1 4 berthnode1 10",
            "py 2 4 berthnode2 10",
            "py 3 4 berthnode2 10",
        ],
        "{}",
        stderr(&out)
    );
}
