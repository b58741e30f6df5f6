#!/usr/bin/env bash
# The whole test suite: unit tests and end-to-end tests against the real
# kernel (namespaces, overlayfs, seccomp, capabilities), run as root and as an
# unprivileged user the tests create. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if [ "$(id -u)" != 0 ]; then
    echo "note: not root: the end-to-end tests will FAIL (they run berth as root and as a user)" >&2
fi
# Slurm 24.11 and 26.05 in debootstrap roots, the plugin built for each
# (before the host's build, which the other tests load).
bash scripts/slurm-roots.sh
cargo build --locked -p berth-launcher -p spank-berth
# The Debian packages, installed into a clean Debian 12 root by a test.
bash scripts/package.sh --debug
cargo test --locked --workspace "$@"
