#!/usr/bin/env bash
# Builds the two Debian packages of berth into target/packages/:
#   berth_VERSION_amd64.deb
#       /usr/bin/berth, a commented /etc/berth/berth.toml (every key is
#       optional: the file may also be absent), the node store /var/lib/berth
#   slurm-spank-berth_VERSION+slurmX.Y_amd64.deb
#       spank_berth.so in Debian's Slurm plugin directory, built against the
#       Slurm headers of this machine (or $SLURM_INCLUDE_DIR), and
#       /etc/slurm/plugstack.conf.d/berth.conf, which loads it; it depends on
#       that Slurm release (a plugin loads only in the major.minor it was
#       built for)
# Usage: bash scripts/package.sh [--debug]      (--debug: the dev build, for tests)
# Install both on every node and wherever srun/sbatch run:
#     apt install ./target/packages/*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
compress=(-Zxz)
[ "${1:-}" = --debug ] && { profile=debug; compress=(-Zgzip -z1); }
include=${SLURM_INCLUDE_DIR:-/usr/include}
version_h="$include/slurm/slurm_version.h"
[ -f "$version_h" ] || { echo "package.sh: $version_h missing: apt install libslurm-dev (or set SLURM_INCLUDE_DIR)" >&2; exit 1; }
number=$(awk '/#define SLURM_VERSION_NUMBER/ {print $3}' "$version_h")
major=$(( (number >> 16) & 0xff )); minor=$(( (number >> 8) & 0xff ))
slurm=$(printf '%d.%02d' "$major" "$minor")
next=$(printf '%d.%02d' "$major" $((minor + 1)))
version=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
flags=(--locked -p berth-launcher -p spank-berth)
[ "$profile" = release ] && flags+=(--release)
cargo build -q "${flags[@]}"    # the plugin's build.rs reads SLURM_INCLUDE_DIR too
out=target/packages
rm -rf "$out" && mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# berth
p="$work/berth"
install -D -m 755 "target/$profile/berth" "$p/usr/bin/berth"
install -d -m 700 "$p/var/lib/berth"
install -d -m 755 "$p/etc/berth" "$p/usr/share/doc/berth"
{
    echo "# berth's configuration. Every key is optional and shown with its default;"
    echo "# without this file berth uses the same defaults. See /usr/share/doc/berth/README.md."
    echo
    # The README's reference block, commented out.
    awk '/^Every key is optional/ {f=1} f && /^```toml/ {b=1; next} b && /^```/ {exit} b' README.md | sed 's/^/# /; s/^# $/#/'
} > "$p/etc/berth/berth.toml"
chmod 644 "$p/etc/berth/berth.toml"
install -m 644 README.md docs/security.md docs/login.md "$p/usr/share/doc/berth/"
install -D -m 644 packaging/berth-login.service "$p/lib/systemd/system/berth-login.service"
install -d "$p/DEBIAN"
echo /etc/berth/berth.toml > "$p/DEBIAN/conffiles"
cat > "$p/DEBIAN/control" <<CONTROL
Package: berth
Version: $version
Architecture: $arch
Maintainer: berth developers <berth@localhost>
Depends: libc6 (>= 2.34), libseccomp2 (>= 2.5), squashfs-tools, e2fsprogs
Section: admin
Priority: optional
Description: secure job containers for Slurm clusters and GPU servers
 berth runs commands in per-user namespaced containers: an overlay root
 filesystem over cached image layers, only the allocated GPUs, cgroup v2
 limits, seccomp, no capabilities, the user's own uid.
CONTROL
dpkg-deb "${compress[@]}" --root-owner-group --build "$p" "$out/berth_${version}_${arch}.deb" >/dev/null

# the SPANK plugin, for this Slurm release
p="$work/plugin"
install -D -m 755 "target/$profile/libspank_berth.so" "$p/usr/lib/$multiarch/slurm-wlm/spank_berth.so"
install -d -m 755 "$p/etc/slurm/plugstack.conf.d"
cat > "$p/etc/slurm/plugstack.conf.d/berth.conf" <<CONF
# berth: srun/sbatch --container-image=... (see /usr/share/doc/berth/README.md).
# Arguments, all optional, with their defaults:
#   config=/etc/berth/berth.toml berth=/usr/bin/berth runtime_dir=/run/berth container_scope=global
required spank_berth.so
CONF
install -d "$p/DEBIAN"
echo /etc/slurm/plugstack.conf.d/berth.conf > "$p/DEBIAN/conffiles"
cat > "$p/DEBIAN/control" <<CONTROL
Package: slurm-spank-berth
Version: ${version}+slurm${slurm}
Architecture: $arch
Maintainer: berth developers <berth@localhost>
Depends: berth (= $version), slurm-wlm-basic-plugins (>= ${slurm}), slurm-wlm-basic-plugins (<< ${next})
Section: admin
Priority: optional
Description: berth's Slurm SPANK plugin (Slurm $slurm)
 Runs every task of a Slurm step in a berth container:
 srun --container-image=IMAGE, #SBATCH --container-image=IMAGE.
 Built for Slurm $slurm only: Slurm loads a plugin only in the release it was
 built for.
CONTROL
dpkg-deb "${compress[@]}" --root-owner-group --build "$p" "$out/slurm-spank-berth_${version}+slurm${slurm}_${arch}.deb" >/dev/null
ls "$out"
