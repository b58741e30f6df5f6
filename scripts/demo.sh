#!/usr/bin/env bash
# The demo: build berth, make a small OCI image from Debian's busybox-static,
# run containers in it showing what the container can and cannot see, then
# start a one-node Slurm cluster with spank_berth.so and run contained steps.
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --locked --release -p berth-launcher -p spank-berth -p berth-e2e --bins --lib 2>&1 | tail -1

berth=$PWD/target/release/berth
demo=$(mktemp -d /tmp/berth-demo.XXXXXX)
chmod 755 "$demo"
trap 'rm -rf "$demo"' EXIT
image=$demo/image
target/release/berth-mkimage "$image" >/dev/null
printf '[store]\npath = "%s/store"\n' "$demo" > "$demo/berth.toml"
export BERTH_CONFIG=$demo/berth.toml

show() { echo; echo "\$ $*"; "$@"; }

echo "== berth: a 3-layer OCI image (gzip, zstd and plain layers, a whiteout, an opaque dir) at $image"
show "$berth" run "$image"
show "$berth" run "$image" sh -c 'echo "hostname: $(hostname)"; echo "processes:"; ps; echo "root dir: $(ls /)"'
show "$berth" run "$image" sh -c 'grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status'
show "$berth" run "$image" sh -c 'for p in keyctl kexec_load "mount_tmpfs /tmp" sethostname unshare_user; do echo "$p -> $(berth-probe $p)"; done'
show "$berth" run "$image" sh -c 'test -e /home || echo "/home of the host: not visible"; echo "/proc/keys reads $(wc -c < /proc/keys) bytes (masked)"'
show "$berth" run --read-only "$image" sh -c 'touch /x 2>&1; touch /tmp/ok && echo "/tmp is writable"'

user=berth-demo
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
echo; echo "== rootless: the same image as the unprivileged user '$user' (no setuid helper)"
runuser -u "$user" -- env BERTH_CONFIG="$BERTH_CONFIG" HOME="/home/$user" "$berth" run "$image" sh -c 'echo "inside: $(id)"'
runuser -u "$user" -- env BERTH_CONFIG="$BERTH_CONFIG" HOME="/home/$user" "$berth" run --remap-root "$image" sh -c 'echo "inside with --remap-root: $(id)"; grep CapEff /proc/self/status'

echo; echo "== limits: a cgroup per container (memory.max 32M here); the OOM kill is reported"
"$berth" run --memory 32M "$image" berth-probe alloc 200 || echo "exit code: $?"

echo; echo "== exit codes: 7 from the command, 127 for a missing command"
set +e
"$berth" run "$image" sh -c 'exit 7'; echo "exit code: $?"
"$berth" run "$image" no-such-command; echo "exit code: $?"
set -e

echo; echo "== start time of a cached image (20 runs of /bin/true)"
start=$(date +%s%N)
for _ in $(seq 20); do "$berth" run "$image" true; done
echo "$(( ($(date +%s%N) - start) / 20000 )) µs per container"

echo; echo "== Slurm: a one-node cluster on localhost (munged, slurmctld, slurmd) with spank_berth.so"
coproc CLUSTER { exec target/release/berth-testcluster "$BERTH_CONFIG"; }
read -r slurm_conf <&"${CLUSTER[0]}"
trap 'exec {CLUSTER[1]}>&-; wait "$CLUSTER_PID" 2>/dev/null; rm -rf "$demo"' EXIT
cd /tmp
as_user() { runuser -u "$user" -- env SLURM_CONF="$slurm_conf" "$@"; }
echo; echo "\$ srun --container-image=$image sh -c 'cat /etc/motd; id -u; grep NoNewPrivs /proc/self/status'"
as_user srun --container-image="$image" sh -c 'cat /etc/motd; id -u; grep NoNewPrivs /proc/self/status'
echo; echo "\$ srun -n2 -O --container-image=... (both tasks in one container)"
as_user srun -n2 -O --container-image="$image" sh -c 'echo "task $SLURM_PROCID: $(readlink /proc/self/ns/mnt)"'
echo; echo "\$ srun --container-image=/no/such/image true   (fails the task, not the node)"
as_user srun --container-image=/no/such/image true || true
for _ in $(seq 50); do [ "$(SLURM_CONF=$slurm_conf sinfo -h -o %T)" = idle ] && break; sleep 0.1; done
echo "node state after the failure: $(SLURM_CONF=$slurm_conf sinfo -h -o %T)"
