#!/usr/bin/env bash
# Pull benchmark: a generated image of realistic shape (default 20 layers,
# 30k files, ~300 MiB uncompressed, gzip) served by a loopback registry
# (Debian's docker-registry), pulled and unpacked side by side in one run by
# berth and by skopeo copy + umoci unpack. Reports wall time, peak RSS and
# disk used (median of RUNS), then the start time of a container from the
# pulled image (nothing unpacked any more). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
prepare umoci time hyperfine runc jq -- -p berth-launcher -p berth-e2e --bins

runs=${RUNS:-3}
layers=${LAYERS:-20} files=${FILES:-30000} mib=${MIB:-300}
work=$(mktemp -d /var/tmp/berth-pull-bench.XXXXXX)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
berth=$PWD/target/release/berth

target/release/berth-mkimage --big "$layers" "$files" "$mib" "$work/image" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$work/image:latest" "docker://127.0.0.1:$port/bench/big:v1"
ref=127.0.0.1:$port/bench/big:v1
compressed=$(du -sb "$work/image/blobs" | cut -f1)

# time -f: wall seconds, peak RSS KiB
measure() { /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>&1; cat "$work/time"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$work/berth.runs"; : > "$work/peer.runs"
for i in $(seq "$runs"); do
    rm -rf "$work/store" "$work/oci" "$work/bundle"
    printf '[store]\npath = "%s/store"\n' "$work" > "$work/berth.toml"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    read -r wall rss < <(measure "$berth" --config "$work/berth.toml" -q pull "$ref")
    echo "$wall $rss $(du -sb "$work/store/layers" | cut -f1)" >> "$work/berth.runs"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    read -r w1 r1 < <(measure skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$work/oci:latest")
    read -r w2 r2 < <(measure umoci unpack --image "$work/oci:latest" "$work/bundle")
    echo "$(echo "$w1 + $w2" | bc) $(( r1 > r2 ? r1 : r2 )) $(du -sb "$work/oci" "$work/bundle" | awk '{s+=$1} END {print s}') $w1 $w2" >> "$work/peer.runs"
done

b_wall=$(cut -d' ' -f1 "$work/berth.runs" | median); b_rss=$(cut -d' ' -f2 "$work/berth.runs" | median); b_disk=$(cut -d' ' -f3 "$work/berth.runs" | median)
p_wall=$(cut -d' ' -f1 "$work/peer.runs" | median); p_rss=$(cut -d' ' -f2 "$work/peer.runs" | median); p_disk=$(cut -d' ' -f3 "$work/peer.runs" | median)
s_wall=$(cut -d' ' -f4 "$work/peer.runs" | median); u_wall=$(cut -d' ' -f5 "$work/peer.runs" | median)

# Second start: nothing to unpack. berth from its store; runc from umoci's bundle.
jq '.process.args = ["/bin/true"] | .process.terminal = false' "$work/bundle/config.json" > "$work/bundle/c.json" && mv "$work/bundle/c.json" "$work/bundle/config.json"
hyperfine -N --warmup 5 --runs 50 --export-json "$work/start.json" \
    -n berth "$berth --config $work/berth.toml run $ref /bin/true" \
    -n "runc (umoci bundle)" "runc run --bundle $work/bundle berth-bench-big" >/dev/null
read -r start_berth start_runc < <(python3 -c "
import json,statistics,sys
r=json.load(open('$work/start.json'))['results']
print(' '.join('%.2f' % (statistics.median(x['times'])*1000) for x in r))")

mb() { echo "scale=1; $1 / 1048576" | bc; }
echo "image: $layers layers, $files files, $(mib_total=$(du -sb "$work/store/layers" | cut -f1); mb "$mib_total") MiB unpacked, $(mb "$compressed") MiB compressed; median of $runs runs"
echo
echo "| pull + unpack | wall s | peak RSS MiB | disk MiB |"
echo "| --- | ---: | ---: | ---: |"
echo "| berth pull | $b_wall | $(mb $((b_rss * 1024))) | $(mb "$b_disk") |"
echo "| skopeo copy + umoci unpack | $p_wall ($s_wall + $u_wall) | $(mb $((p_rss * 1024))) | $(mb "$p_disk") |"
echo "| ratio (peer / berth) | $(echo "scale=2; $p_wall / $b_wall" | bc)x | | |"
echo
echo "| start /bin/true from the pulled image | median ms |"
echo "| --- | ---: |"
echo "| berth run (cached layers) | $start_berth |"
echo "| runc run (umoci bundle) | $start_runc |"
