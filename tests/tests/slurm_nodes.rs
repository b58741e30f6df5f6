//! Steps across several nodes: two slurmd on this machine, each its own
//! node to Slurm, in a mount and UTS namespace of its own with its own
//! runtime directory and berth store (see the test kit's slurm/nodes.rs).

use berth_e2e::slurm::{keepers_of, node_store, Cluster, Tracking};
use berth_e2e::*;

/// No keeper and no step state is left on either node after `what`, and
/// both nodes stay up.
fn assert_nothing_left(s: &Sandbox, cluster: &Cluster, what: &str) {
    wait_until("no keeper is left", || keepers_of(s) == 0);
    for node in ["berthnode1", "berthnode2"] {
        let dir = cluster.node_runtime_dir(node).join("slurm");
        wait_until("the node's step state is removed", || {
            count_entries(&dir) == 0
        });
    }
    cluster.assert_node_stays_up(what);
}

/// `srun -N2 -n4`: each node imports the image into its own store and
/// starts one container for its two tasks, which see the node's name and
/// only the GPU Slurm gave the step there (node 1's first is nvidia0,
/// 195:0; node 2's is nvidia2, 195:2), counted from 0 in CUDA_VISIBLE_DEVICES.
#[test]
fn a_two_node_step_runs_in_a_container_on_each_node() {
    require_root!();
    let s = Sandbox::new();
    let image = s.standard_image();
    let cluster = Cluster::start_nodes(&s.config(), 2, Tracking::Pgid);
    let image_opt = format!("--container-image={}", image.display());
    let script = "gpus=$(ls /dev | grep '^nvidia[0-9]'); \
                  echo $SLURM_PROCID $(hostname) $gpus $(stat -c %t:%T /dev/$gpus) $CUDA_VISIBLE_DEVICES";
    let out = cluster.srun(&[&image_opt, "-N2", "-n4", "--gres=gpu:1", "sh", "-c", script]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "0 berthnode1 nvidia0 c3:0 0",
            "1 berthnode1 nvidia0 c3:0 0",
            "2 berthnode2 nvidia2 c3:2 0",
            "3 berthnode2 nvidia2 c3:2 0",
        ],
        "{text}"
    );
    for node in ["berthnode1", "berthnode2"] {
        let store = node_store(&s.config(), node);
        assert!(
            count_entries(&store) > 0,
            "{node} imported the image into its own store {}",
            store.display()
        );
    }
    assert_ne!(
        node_store(&s.config(), "berthnode1"),
        node_store(&s.config(), "berthnode2")
    );
}

/// scancel of a step running on two nodes ends both containers and leaves
/// no keeper or state on either node.
#[test]
fn scancel_of_a_two_node_step_leaves_nothing_on_either_node() {
    require_root!();
    let s = Sandbox::new();
    let image = s.standard_image();
    let cluster = Cluster::start_nodes(&s.config(), 2, Tracking::Pgid);
    let image_opt = format!("--container-image={}", image.display());
    let mut srun =
        cluster.srun_in_background(&[&image_opt, "-J", "two-nodes", "-N2", "-n2", "sleep", "300"]);
    wait_until("a keeper runs on each node", || keepers_of(&s) == 2);
    assert!(cluster.scancel(&["-n", "two-nodes"]));
    let _ = srun.wait();
    assert_nothing_left(&s, &cluster, "scancel of a two-node step");
}

/// An image only one node has: the other node's tasks fail with one
/// `berth:` line naming that node, and the step ends on both (no keeper or
/// state is left on either).
#[test]
fn a_bad_image_on_one_node_fails_that_nodes_tasks_once_and_ends_the_step() {
    require_root!();
    let s = Sandbox::new();
    let cluster = Cluster::start_nodes(&s.config(), 2, Tracking::Pgid);
    let (node1_local, local) = cluster.node_local("berthnode1");
    berth_e2e::write_standard_image(&node1_local.join("image"));
    let image_opt = format!("--container-image={}", local.join("image").display());
    let out = cluster.srun(&[
        &image_opt,
        "-N2",
        "-n4",
        "sh",
        "-c",
        "echo ran on $(hostname)",
    ]);
    assert!(!out.status.success());
    let errors = stderr(&out);
    let berth_lines: Vec<&str> = errors.lines().filter(|l| l.contains("berth: ")).collect();
    assert_eq!(berth_lines.len(), 1, "{errors}");
    assert!(
        berth_lines[0].contains("(node berthnode2)") && berth_lines[0].contains("image"),
        "{errors}"
    );
    assert!(!stdout(&out).contains("berthnode2"), "{}", stdout(&out));
    assert_nothing_left(&s, &cluster, "a bad image on one node");
}

/// `sbatch -N2`: a script in the container runs on the job's first node;
/// a script's steps run in containers on both nodes, and a named container
/// of the job keeps its files across steps on each node; once the job ends
/// no keeper is left on either node.
#[test]
fn a_two_node_batch_job_runs_its_steps_in_containers_on_both_nodes() {
    require_root!();
    let s = Sandbox::new();
    let image = s.standard_image();
    let cluster = Cluster::start_nodes(&s.config(), 2, Tracking::Pgid);
    cluster.add_plugstack_args("container_scope=job");
    let dir = shared_dir(&s, "batch");
    let text = cluster.batch(
        &dir,
        &format!(
            "#SBATCH -N2 -n2 --container-image={}\n\
             test -e /work && echo script in the container on $(hostname)\n",
            image.display()
        ),
    );
    assert_eq!(text, "script in the container on berthnode1\n");
    let text = cluster.batch(
        &dir,
        &format!(
            "#SBATCH -N2 -n2\n\
             srun --container-name=kept --container-image={} sh -c 'hostname > /tmp/made-on'\n\
             srun --container-name=kept sh -c 'echo $(hostname) kept $(cat /tmp/made-on)'\n",
            image.display()
        ),
    );
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["berthnode1 kept berthnode1", "berthnode2 kept berthnode2"],
        "{text}"
    );
    wait_until("no keeper is left", || keepers_of(&s) == 0);
}
