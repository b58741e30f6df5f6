#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, as root.
# Extra packages can be named as arguments (the bench script adds its peers).
set -euo pipefail

packages=(build-essential pkg-config libseccomp-dev libclang-dev busybox-static ca-certificates curl
          docker-registry skopeo squashfs-tools python3
          slurmctld slurmd slurm-client munge libslurm-dev
          qemu-system-x86 e2fsprogs debootstrap util-linux
          libpmix2 libopenmpi-dev openmpi-bin                  # Slurm's mpi/pmix plugin; mpicc for the MPI tests
          openssh-server openssh-client openssh-sftp-server "$@")   # berth login's tests: sshd, ssh, scp, sftp
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The cgroup v2 tests boot Debian's kernel in qemu: the harness fetches it
# with apt-get download, which needs the package lists.
apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt-get update -qq

if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        echo "installing the Rust toolchain with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
fi
