//! Starts the test kit's Slurm cluster (munged, slurmctld, slurmd,
//! spank_berth.so) for benchmarks and demos: one node, or with `--nodes N`
//! several (each slurmd in its own namespaces: see the kit's nodes.rs).
//! Prints the SLURM_CONF path, then keeps the cluster up until its standard
//! input closes.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (nodes, config) = match args.as_slice() {
        [config] => (1, config),
        [flag, n, config] if flag == "--nodes" => {
            match n.to_str().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (1..=3).contains(&n) => (n, config),
                _ => usage(),
            }
        }
        _ => usage(),
    };
    let config = std::path::Path::new(config);
    let cluster = match nodes {
        1 => berth_e2e::slurm::Cluster::start(config),
        n => berth_e2e::slurm::Cluster::start_nodes(config, n, berth_e2e::slurm::Tracking::Pgid),
    };
    println!("{}", cluster.conf().display());
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    drop(cluster);
}

fn usage() -> ! {
    eprintln!("usage: berth-testcluster [--nodes 1-3] BERTH_TOML   (stops when stdin closes)");
    std::process::exit(2);
}
