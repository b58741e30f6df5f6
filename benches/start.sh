#!/usr/bin/env bash
# Start-time benchmark: /bin/true in the same cached busybox image, side by
# side in one run: berth (OCI image of 3 layers, and a plain rootfs dir),
# runc (same namespaces: user, mount, pid, ipc, uts, cgroup; without and with
# a seccomp profile of berth's allow-list), bwrap (same namespaces, no
# overlay), bare exec. runc always makes a cgroup; berth makes one only
# with limits or GPUs, so the limits row (memory, pids and cpu) shows what a
# cgroup costs. Root acting for a user (`--user`, as the Slurm plugin does)
# opens the image with that user's rights, and shows the image's files as
# that user's (an idmapped mount; --remap-root: as root's). BEFORE=/path/to/an/older/berth
# adds its rows to the same run. Prints medians and ratios. Run as root on
# Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
prepare runc bubblewrap hyperfine jq python3 -- -p berth-launcher -p berth-e2e --bins

runs=${RUNS:-300}
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # the images are read with the rights of the --user rows
user=65534:65534
berth=$PWD/target/release/berth
target/release/berth-mkimage "$work/image" >/dev/null
printf '[store]\npath = "%s/store"\n' "$work" > "$work/berth.toml"
printf '[store]\npath = "%s/store"\n[security]\nseccomp = false\n' "$work" > "$work/noseccomp.toml"
printf '[store]\npath = "%s/store"\n[limits.default]\nmemory = "1G"\npids = 1024\ncpus = 1.0\n' "$work" > "$work/limits.toml"

# A plain rootfs with the same busybox, for the peers (and berth on a dir).
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc}
cp /bin/busybox "$rootfs/bin/"
for a in sh true; do ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"

# runc bundle: berth's namespaces, no network namespace, root mapped to root;
# /sys bound read-only (sysfs needs a network namespace of its own).
(cd "$work/bundle" && runc spec)
jq '.process.args = ["/bin/true"] | .process.terminal = false
    | .linux.namespaces = [{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"cgroup"},{"type":"user"}]
    | .linux.uidMappings = [{"containerID":0,"hostID":0,"size":65536}]
    | .linux.gidMappings = [{"containerID":0,"hostID":0,"size":65536}]
    | .mounts |= map(if .destination == "/sys" then
        {"destination":"/sys","type":"none","source":"/sys","options":["rbind","nosuid","noexec","nodev","ro"]} else . end)' \
    "$work/bundle/config.json" > "$work/bundle/config.tmp" && mv "$work/bundle/config.tmp" "$work/bundle/config.json"
mkdir -p "$work/bundle-seccomp"
syscalls=$(sed -n '/^pub const ALLOWED: &\[&str\] = &\[/,/^\];/p' launcher/src/seccomp/profile.rs | grep -o '"[a-z0-9_]*"' | paste -sd, -)
jq --arg root "$rootfs" --argjson names "[$syscalls]" '.root.path = $root | .linux.seccomp = {"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
    "syscalls":[{"names":$names,"action":"SCMP_ACT_ALLOW"}]}' "$work/bundle/config.json" > "$work/bundle-seccomp/config.json"

"$berth" --config "$work/berth.toml" run "$work/image" true   # fill the layer store and seccomp cache
"$berth" --config "$work/berth.toml" run "$rootfs" /bin/true
before=()
if [ -n "${BEFORE:-}" ]; then
    printf '[store]\npath = "%s/store-before"\n' "$work" > "$work/before.toml"
    "$BEFORE" --config "$work/before.toml" run "$work/image" true
    before=(-n "before: berth (OCI image, 3 layers)" "$BEFORE --config $work/before.toml run $work/image /bin/true"
            -n "before: berth --user (OCI image)" "$BEFORE --config $work/before.toml run --user $user $work/image /bin/true"
            -n "before: berth --user --remap-root (OCI image)" "$BEFORE --config $work/before.toml run --user $user --remap-root $work/image /bin/true"
            -n "before: berth --user (rootfs dir)" "$BEFORE --config $work/before.toml run --user $user $rootfs /bin/true")
fi

# BIG=1: the same start from a 1 GiB image of 20 layers (the ownership
# mapping is one idmapped mount of the layer directory, whatever the size).
big=()
if [ -n "${BIG:-}" ]; then
    target/release/berth-mkimage --big 20 20000 1024 "$work/big" >/dev/null
    chmod -R a+rX "$work/big"
    "$berth" --config "$work/berth.toml" run "$work/big" true
    big=(-n "berth --user (1 GiB image, 20 layers)" "$berth --config $work/berth.toml run --user $user $work/big /bin/true")
fi

hyperfine -N --warmup 20 --runs "$runs" --export-json "$work/result.json" \
    -n "bare exec" "$rootfs/bin/true" \
    -n "berth (OCI image, 3 layers)" "$berth --config $work/berth.toml run $work/image /bin/true" \
    -n "berth (rootfs dir)" "$berth --config $work/berth.toml run $rootfs /bin/true" \
    -n "berth --user (OCI image)" "$berth --config $work/berth.toml run --user $user $work/image /bin/true" \
    -n "berth --user (rootfs dir)" "$berth --config $work/berth.toml run --user $user $rootfs /bin/true" \
    -n "berth --user --remap-root (OCI image)" "$berth --config $work/berth.toml run --user $user --remap-root $work/image /bin/true" \
    -n "berth, seccomp off" "$berth --config $work/noseccomp.toml run $work/image /bin/true" \
    -n "berth + limits (memory, pids, cpu)" "$berth --config $work/limits.toml run $work/image /bin/true" \
    -n "bwrap" "bwrap --unshare-user --uid 0 --gid 0 --unshare-ipc --unshare-pid --unshare-uts --unshare-cgroup --bind $rootfs / --proc /proc --dev /dev /bin/true" \
    -n "runc" "runc run --bundle $work/bundle berth-bench" \
    -n "runc + seccomp" "runc run --bundle $work/bundle-seccomp berth-bench-s" \
    "${before[@]}" "${big[@]}" >/dev/null

python3 - "$work/result.json" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: statistics.median(r["times"]) * 1000 for r in results}
base = med["berth (OCI image, 3 layers)"]
print(f"| start of /bin/true | median ms | vs berth |")
print(f"| --- | ---: | ---: |")
for name, ms in med.items():
    print(f"| {name} | {ms:.2f} | {ms / base:.2f}x |")
PY
