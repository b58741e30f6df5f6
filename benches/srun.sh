#!/usr/bin/env bash
# Step start-up: `srun --container-image=<cached image> true` against bare
# `srun true`, side by side in one run, for -n1 and -n8, on a one-node Slurm
# cluster on localhost (the test kit's), as an unprivileged user; then on two
# nodes (-N2 -n8), and an Open MPI program over two nodes in containers
# against the same program bare. Reports the
# milliseconds the container adds per step. BERTH_BIN=/path/to/berth runs
# another build (its libspank_berth.so beside it) for a before/after
# comparison. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
. benches/prepare.sh
prepare hyperfine -- -p berth-launcher -p spank-berth -p berth-e2e --bins --lib

runs=${RUNS:-30}
work=$(mktemp -d /tmp/berth-srun-bench.XXXXXX)
chmod 755 "$work"
user=berth-test
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
target/release/berth-mkimage "$work/image" >/dev/null
printf '[store]\npath = "%s/store"\n' "$work" > "$work/berth.toml"
berth=${BERTH_BIN:-$PWD/target/release/berth}
export BERTH_BIN=$berth
"$berth" --config "$work/berth.toml" run "$work/image" true   # fill the store

coproc CLUSTER { exec target/release/berth-testcluster "$work/berth.toml"; }
read -r conf <&"${CLUSTER[0]}"
trap 'exec {CLUSTER[1]}>&-; wait "$CLUSTER_PID" 2>/dev/null; rm -rf "$work"' EXIT
export SLURM_CONF=$conf
as_user() { runuser -u "$user" -- env SLURM_CONF="$conf" "$@"; }
cd /tmp   # a directory that exists in the container too
as_user srun --container-image="$work/image" true   # warm: plugin, helper, page cache

hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/srun.json" \
    -n "srun -n1 true" "runuser -u $user -- env SLURM_CONF=$conf srun -n1 true" \
    -n "srun -n1 --container-image true" "runuser -u $user -- env SLURM_CONF=$conf srun -n1 --container-image=$work/image true" \
    -n "srun -n8 true" "runuser -u $user -- env SLURM_CONF=$conf srun -n8 -O true" \
    -n "srun -n8 --container-image true" "runuser -u $user -- env SLURM_CONF=$conf srun -n8 -O --container-image=$work/image true" \
    -n "srun -n1 --container-name (kept, a new job)" "runuser -u $user -- env SLURM_CONF=$conf srun -n1 --container-name=kept --container-image=$work/image true" >/dev/null

# Later steps of a job joining a named container (each gets its own view
# of its running keeper), against bare steps in the same allocation. The
# kept row above: each srun is a new job, which starts the kept
# container's keeper again (its ext4 layer mounted) and a view of it.
install -d -m 777 "$work/named"
as_user salloc -n1 --quiet bash -c "srun --container-name=bench --container-image=$work/image true && \
    hyperfine -N --warmup 3 --runs $runs --export-json $work/named/named.json \
    -n 'srun -n1 true (in a job)' 'srun -n1 true' \
    -n 'srun -n1 --container-name (later step)' 'srun -n1 --container-name=bench true' >/dev/null"

# Two nodes (the test kit's: two slurmd on this machine, each with its own
# store, filled first): a step over both, and an MPI program (Open MPI,
# PMIx) in containers of the MPI image against the same program bare.
trap 'rm -rf "$work"' EXIT
cluster_pid=$CLUSTER_PID
exec {CLUSTER[1]}>&-
wait "$cluster_pid" 2>/dev/null || true
mpi_image=/var/cache/berth-tests/roots/bookworm-mpi
[ -x "$mpi_image/usr/bin/mpirun" ] || bash "$repo/scripts/slurm-roots.sh" >/dev/null
mpicc -o "$work/mpi-hello" "$repo/tests/mpi/hello.c"
chmod 755 "$work/mpi-hello"
coproc NODES { exec "$repo/target/release/berth-testcluster" --nodes 2 "$work/berth.toml"; }
read -r conf <&"${NODES[0]}"
trap 'exec {NODES[1]}>&-; wait "$NODES_PID" 2>/dev/null; rm -rf "$work"' EXIT
as_user() { runuser -u "$user" -- env SLURM_CONF="$conf" "$@"; }
in_container="--container-image=$mpi_image --container-mounts=$work/mpi-hello:/usr/local/bin/mpi-hello:ro"
as_user srun -N2 -n2 --container-image="$work/image" true     # each node imports the image
as_user srun -N2 -n2 --mpi=pmix $in_container mpi-hello >/dev/null
run="runuser -u $user -- env SLURM_CONF=$conf srun"
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/nodes.json" \
    -n "srun -N2 -n8 true" "$run -N2 -n8 -O true" \
    -n "srun -N2 -n8 --container-image true" "$run -N2 -n8 -O --container-image=$work/image true" \
    -n "mpi-hello -N2 -n4 (bare)" "$run -N2 -n4 --mpi=pmix $work/mpi-hello" \
    -n "mpi-hello -N2 -n4 (containers)" "$run -N2 -n4 --mpi=pmix $in_container mpi-hello" >/dev/null

python3 - "$work/srun.json" "$work/named/named.json" "$work/nodes.json" <<'PY'
import json, statistics, sys
med = {}
for path in sys.argv[1:]:
    med.update({r["command"]: statistics.median(r["times"]) * 1000 for r in json.load(open(path))["results"]})
print("| step | median ms | added by the container |")
print("| --- | ---: | ---: |")
for n in ("1", "8"):
    bare, cont = med[f"srun -n{n} true"], med[f"srun -n{n} --container-image true"]
    print(f"| srun -n{n} true | {bare:.1f} | |")
    print(f"| srun -n{n} --container-image=<cached> true | {cont:.1f} | {cont - bare:+.1f} ms |")
bare, kept = med["srun -n1 true"], med["srun -n1 --container-name (kept, a new job)"]
print(f"| srun -n1 --container-name=<kept from an earlier job> true | {kept:.1f} | {kept - bare:+.1f} ms |")
bare, named = med["srun -n1 true (in a job)"], med["srun -n1 --container-name (later step)"]
print(f"| srun -n1 true, inside a job | {bare:.1f} | |")
print(f"| srun -n1 --container-name=<made by an earlier step> true | {named:.1f} | {named - bare:+.1f} ms |")
bare, cont = med["srun -N2 -n8 true"], med["srun -N2 -n8 --container-image true"]
print(f"| srun -N2 -n8 true (two nodes) | {bare:.1f} | |")
print(f"| srun -N2 -n8 --container-image=<cached> true | {cont:.1f} | {cont - bare:+.1f} ms |")
bare, cont = med["mpi-hello -N2 -n4 (bare)"], med["mpi-hello -N2 -n4 (containers)"]
print(f"| srun -N2 -n4 --mpi=pmix mpi-hello (Open MPI, allreduce) | {bare:.1f} | |")
print(f"| the same in containers of the MPI image | {cont:.1f} | {cont - bare:+.1f} ms |")
PY
