#!/usr/bin/env python3
"""How an image reaches N nodes: bytes from the registry and time to the
first task, for the ways docs/multinode.md describes. A model with stated
assumptions (change them with the flags), not a measurement.

    python3 benches/image-distribution-model.py [--image-gb 10] [--nodes 1,8,64,512]
"""
import argparse
import math

p = argparse.ArgumentParser()
p.add_argument("--image-gb", type=float, default=10.0, help="compressed image size (GB)")
p.add_argument("--unpacked-ratio", type=float, default=2.0, help="unpacked / compressed")
p.add_argument("--registry-gbps", type=float, default=10.0, help="registry (or site mirror) egress, Gbit/s, shared by all pulls")
p.add_argument("--nic-gbps", type=float, default=25.0, help="each node's network, Gbit/s")
p.add_argument("--unpack-gbs", type=float, default=0.4, help="one node's decompress+unpack rate, GB/s of compressed input")
p.add_argument("--pfs-gbs", type=float, default=20.0, help="parallel filesystem aggregate read, GB/s")
p.add_argument("--squashfs-gbs", type=float, default=0.3, help="mksquashfs rate, GB/s of unpacked input")
p.add_argument("--chunk-mb", type=float, default=64.0, help="peer-to-peer chunk size, MB")
p.add_argument("--nodes", default="1,8,64,512")
a = p.parse_args()

registry = a.registry_gbps / 8  # GB/s
nic = a.nic_gbps / 8
image = a.image_gb


def pull_once_time():
    """One node pulls and unpacks, streaming: the slowest stage decides."""
    return image / min(registry, nic, a.unpack_gbs)


def every_node_pulls(n):
    """Today: each node pulls from the registry, all at once."""
    transfer = n * image / registry  # the registry's egress is shared
    per_node = image / min(nic, a.unpack_gbs)
    return n * image, max(transfer, per_node)


def shared_store(n):
    """One node pulls and packs a squashfs onto the parallel filesystem;
    every node mounts it (reads are lazy: only the pages a task touches,
    the first task's start reads little)."""
    pack = image * a.unpacked_ratio / a.squashfs_gbs
    first_touch = n * 0.2 / a.pfs_gbs  # ~200 MB read per node to start
    return image, pull_once_time() + pack + first_touch


def peer_to_peer(n):
    """Nodes fetch chunks from the registry once and from each other
    (pipelined broadcast): each node receives the image once at NIC speed,
    the pipeline adds one chunk time per tree level."""
    levels = math.ceil(math.log2(n)) if n > 1 else 0
    chunk = a.chunk_mb / 1024 / min(nic, registry)
    stream = image / min(registry, nic, a.unpack_gbs)
    return image, stream + levels * chunk


print(f"Assumptions: {image:g} GB compressed image ({image * a.unpacked_ratio:g} GB unpacked); "
      f"registry egress {a.registry_gbps:g} Gbit/s shared; node NIC {a.nic_gbps:g} Gbit/s; "
      f"unpack {a.unpack_gbs:g} GB/s per node; parallel filesystem {a.pfs_gbs:g} GB/s; "
      f"mksquashfs {a.squashfs_gbs:g} GB/s; chunks of {a.chunk_mb:g} MB.\n")
print("| nodes | every node pulls (today): registry GB | time to first task | shared squashfs on a parallel FS: registry GB | time | peer-to-peer: registry GB | time |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for n in (int(x) for x in a.nodes.split(",")):
    rows = [every_node_pulls(n), shared_store(n), peer_to_peer(n)]
    cells = " | ".join(f"{gb:,.0f} | {t:,.0f} s" for gb, t in rows)
    print(f"| {n} | {cells} |")
