#!/usr/bin/env bash
# SSH into the shared server: `ssh host true` landing in the user's login
# container (berth login, sshd's ForceCommand) with the container already
# running and with it stopped (so each login starts it: its ext4 layer
# mounted, its keeper started), against plain `ssh host true` to a host
# shell on the same sshd, side by side in one run. Reports the
# milliseconds berth adds. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
prepare hyperfine -- -p berth-launcher -p berth-e2e --bins

runs=${RUNS:-30}
work=$(mktemp -d /tmp/berth-login-bench.XXXXXX)
coproc SERVER { exec target/release/berth-testlogin; }
read -r config <&"${SERVER[0]}"
read -r ssh_login <&"${SERVER[0]}"
read -r ssh_plain <&"${SERVER[0]}"
trap 'exec {SERVER[1]}>&-; wait "$SERVER_PID" 2>/dev/null; rm -rf "$work"' EXIT
stop="target/release/berth --config $config stop --user berth-test"

$ssh_login true; $ssh_plain true   # warm: the image imported, the layer made

# One --prepare per command, in order: only the last stops the container.
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/login.json" \
    --prepare true --prepare true --prepare "$stop" \
    -n "ssh host true (plain)" "$ssh_plain true" \
    -n "ssh host true (berth login, running)" "$ssh_login true" \
    -n "ssh host true (berth login, stopped)" "$ssh_login true" >/dev/null

python3 - "$work/login.json" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: statistics.median(r["times"]) * 1000 for r in results}
p90 = {r["command"]: sorted(r["times"])[int(len(r["times"]) * 0.9) - 1] * 1000 for r in results}
plain = med["ssh host true (plain)"]
print(f"{'':42} {'median ms':>10} {'p90 ms':>8} {'added ms':>9}")
for name, ms in med.items():
    print(f"{name:42} {ms:10.1f} {p90[name]:8.1f} {ms - plain:+9.1f}")
PY
