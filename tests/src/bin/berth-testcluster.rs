//! Starts the test kit's one-node Slurm cluster (munged, slurmctld, slurmd,
//! spank_berth.so) for benchmarks and demos: prints the SLURM_CONF path,
//! then keeps the cluster up until its standard input closes.

fn main() {
    let Some(config) = std::env::args_os().nth(1) else {
        eprintln!("usage: berth-testcluster BERTH_TOML   (stops when stdin closes)");
        std::process::exit(2);
    };
    let cluster = berth_e2e::slurm::Cluster::start(std::path::Path::new(&config));
    println!("{}", cluster.conf().display());
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    drop(cluster);
}
