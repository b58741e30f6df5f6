//! Several Slurm nodes on one machine, for multi-node steps: each node is
//! a slurmd of its own (`slurmd -N NAME`) on its own port and loopback
//! address (`NodeName=... NodeAddr=127.0.0.N Port=...`), under one
//! slurmctld. Each slurmd runs in a mount and a UTS namespace of its own
//! (`unshare --mount --uts`): its hostname is the node's name, and
//! over the cluster's common paths it sees its own directories, so that
//! the plugin on each node has a runtime directory and a berth store of
//! its own, as separate machines would:
//!
//! - `<cluster>/run` (the plugstack's `runtime_dir`) is `<cluster>/nodes/NAME/run`;
//! - the plugstack's berth.toml is `<cluster>/nodes/NAME/berth.toml`, the
//!   test's config with `[store] path` and `summary_dir` suffixed `-NAME`;
//! - `<cluster>/local` is `<cluster>/nodes/NAME/local`: a path whose
//!   contents differ between nodes (an image only one node has);
//! - Slurm's mpi.conf is `<cluster>/nodes/NAME/mpi.conf`, which keeps the
//!   PMIx plugin's client files in `<cluster>/nodes/NAME/tmp` (a node's
//!   own /tmp, elsewhere).
//!
//! Slurm's spool, pid and log files are per node through `%n`
//! (`log/slurmd-NAME.log`). The fake GPUs: two per node, at 195:2i and
//! 195:2i+1 for the i-th node (from 0).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A node of a multi-node test cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name in Slurm, and its hostname.
    pub name: String,
    /// Its address (127.0.0.N).
    pub addr: String,
    /// slurmd's port.
    pub port: u16,
}

/// `count` nodes, `berthnode1`...
pub(super) fn nodes(count: usize, ports: &[u16]) -> Vec<Node> {
    assert!(count <= ports.len(), "at most {} nodes", ports.len());
    (1..=count)
        .map(|i| Node {
            name: format!("berthnode{i}"),
            addr: format!("127.0.0.{i}"),
            port: ports[i - 1],
        })
        .collect()
}

/// slurm.conf's lines for the nodes' files (`%n`: each node's own).
pub(super) fn daemon_files(d: &Path) -> String {
    let d = d.display();
    format!(
        "SlurmdSpoolDir={d}/spool/%n\nSlurmdPidFile={d}/slurmd-%n.pid\nSlurmdLogFile={d}/log/slurmd-%n.log\n"
    )
}

/// slurm.conf's NodeName lines.
pub(super) fn node_lines(nodes: &[Node], cpus: usize, memory: &str) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "NodeName={0} NodeHostname={0} NodeAddr={1} Port={2} CPUs={cpus}{memory} Gres=gpu:2 State=UNKNOWN\n",
                n.name, n.addr, n.port
            )
        })
        .collect()
}

/// gres.conf's lines: each node's two fake GPUs.
pub(super) fn gres_lines(nodes: &[Node], gpu_dir: &Path) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "NodeName={} Name=gpu File={}/nvidia[{}-{}]\n",
                n.name,
                gpu_dir.display(),
                2 * i,
                2 * i + 1
            )
        })
        .collect()
}

/// A node's own directory under the cluster's.
pub(super) fn node_dir(cluster_dir: &Path, node: &str) -> PathBuf {
    cluster_dir.join("nodes").join(node)
}

/// `berth_config` as node `node` reads it: its `[store]` paths suffixed
/// with the node's name.
fn node_config(berth_config: &str, node: &str) -> String {
    let mut in_store = false;
    berth_config
        .lines()
        .map(|line| {
            if line.trim_start().starts_with('[') {
                in_store = line.trim() == "[store]";
            }
            let key = line.split('=').next().unwrap_or_default().trim();
            match (in_store, key, line.trim_end().strip_suffix('"')) {
                (true, "path" | "summary_dir", Some(quoted)) => format!("{quoted}-{node}\"\n"),
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

/// The store node `node` uses, from the test's config.
pub fn node_store(berth_config: &Path, node: &str) -> PathBuf {
    let text = std::fs::read_to_string(berth_config).unwrap_or_default();
    let own = node_config(&text, node);
    let line = own
        .lines()
        .skip_while(|l| l.trim() != "[store]")
        .find(|l| l.split('=').next().is_some_and(|k| k.trim() == "path"))
        .expect("the test's berth.toml names [store] path");
    PathBuf::from(line.split_once('=').unwrap().1.trim().trim_matches('"'))
}

/// Starts node `node`'s slurmd in its own mount and UTS namespaces (see
/// the module's comment) with `slurm_conf`.
pub(super) fn spawn_slurmd(
    cluster_dir: &Path,
    node: &Node,
    slurm_conf: &Path,
    berth_config: &Path,
) -> Child {
    let own = node_dir(cluster_dir, &node.name);
    for dir in ["run", "tmp", "local"] {
        std::fs::create_dir_all(own.join(dir)).unwrap();
    }
    std::fs::create_dir_all(cluster_dir.join("spool").join(&node.name)).unwrap();
    let text = std::fs::read_to_string(berth_config).unwrap_or_default();
    std::fs::write(own.join("berth.toml"), node_config(&text, &node.name)).unwrap();
    // Slurm's PMIx plugin keeps its clients' files under /tmp unless told.
    std::fs::write(
        own.join("mpi.conf"),
        format!("PMIxCliTmpDirBase={}\n", own.join("tmp").display()),
    )
    .unwrap();
    let common_mpi_conf = cluster_dir.join("mpi.conf");
    if !common_mpi_conf.exists() {
        std::fs::write(&common_mpi_conf, "").unwrap();
    }
    std::fs::create_dir_all(cluster_dir.join("local")).unwrap();
    let binds = [
        (own.join("run"), cluster_dir.join("run")),
        (own.join("local"), cluster_dir.join("local")),
        (own.join("berth.toml"), berth_config.to_path_buf()),
        (own.join("mpi.conf"), common_mpi_conf),
    ];
    let mut script = String::from("set -e\n");
    let mut args: Vec<PathBuf> = vec![];
    for (from, to) in binds {
        script.push_str(&format!(
            "mount --bind \"${{{}}}\" \"${{{}}}\"\n",
            args.len() + 1,
            args.len() + 2
        ));
        args.extend([from, to]);
    }
    script.push_str(&format!(
        "hostname \"${{{0}}}\"\nexec slurmd -D -N \"${{{0}}}\" -f \"${{{1}}}\"",
        args.len() + 1,
        args.len() + 2
    ));
    Command::new("unshare")
        .args(["--mount", "--uts", "--propagation", "private", "sh", "-c"])
        .arg(script)
        .arg("sh")
        .args(&args)
        .arg(&node.name)
        .arg(slurm_conf)
        .current_dir("/tmp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("unshare missing ({e}): apt-get install util-linux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_config_has_its_own_store() {
        let text =
            "[store]\npath = \"/s/store\"\nsummary_dir = \"/s/ps\"\n[registry]\npath = \"x\"\n";
        assert_eq!(
            node_config(text, "n2"),
            "[store]\npath = \"/s/store-n2\"\nsummary_dir = \"/s/ps-n2\"\n[registry]\npath = \"x\"\n"
        );
    }
}
