#!/usr/bin/env bash
# Two builds of berth side by side in one Slurm cluster: before each run the
# plugin and the berth binary of build A or B are renamed into place
# (slurmstepd loads the plugin afresh for every step), so both are timed
# on the same daemons, the same store and the same page cache.
#     bash benches/srun-ab.sh DIR_A DIR_B    (each holding berth and libspank_berth.so)
# e.g. a release build of an older commit (CARGO_TARGET_DIR=/tmp/old) and
# target/release. Run as root on Debian 12, after benches/srun.sh built the kit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 DIR_A DIR_B" >&2; exit 2; }
a=$(realpath "$1"); b=$(realpath "$2")
runs=${RUNS:-60}
work=$(mktemp -d /tmp/berth-srun-ab.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/bin"
user=berth-test
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
target/release/berth-mkimage "$work/image" >/dev/null
printf '[store]\npath = "%s/store"\n' "$work" > "$work/berth.toml"
swap() {   # swap DIR: its berth and plugin into $work/bin, each by an atomic rename
    for f in berth libspank_berth.so; do
        cp "$1/$f" "$work/bin/.$f.tmp" && mv "$work/bin/.$f.tmp" "$work/bin/$f"
    done
}
export -f swap; export work
swap "$b"
"$work/bin/berth" --config "$work/berth.toml" run "$work/image" true   # fill the store
export BERTH_BIN=$work/bin/berth
coproc CLUSTER { exec target/release/berth-testcluster "$work/berth.toml"; }
read -r conf <&"${CLUSTER[0]}"
trap 'exec {CLUSTER[1]}>&-; wait "$CLUSTER_PID" 2>/dev/null; rm -rf "$work"' EXIT
cd /tmp
as_user="runuser -u $user -- env SLURM_CONF=$conf"
for dir in "$a" "$b"; do swap "$dir"; $as_user srun --container-image="$work/image" true; done
hyperfine -N --warmup 3 --runs "$runs" \
    --prepare "bash -c 'swap $a'" -n "A: srun -n1 --container-image=<cached> true" "$as_user srun -n1 --container-image=$work/image true" \
    --prepare "bash -c 'swap $b'" -n "B: srun -n1 --container-image=<cached> true" "$as_user srun -n1 --container-image=$work/image true" \
    --prepare "true" -n "srun -n1 true" "$as_user srun -n1 true"
