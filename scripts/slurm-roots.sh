#!/usr/bin/env bash
# Debian roots for the tests (tests/src/releases.rs): trixie (Debian 13,
# Slurm 24.11) and sid (26.05) with Slurm's headers, and a bare Debian 12
# with Slurm where the packages are installed, and Debian 12 with Open MPI
# (bookworm-mpi, an image for the MPI tests); made with debootstrap from
# Debian's archive and kept in
#     /var/cache/berth-tests/roots/SUITE        (about 300 MB and 40 s each)
# A root already there is kept; delete it to take a newer sid. Then the
# plugin is built against each root's headers into
#     target/slurm-releases/SUITE/libspank_berth.so
# (only the plugin crate is compiled again). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/var/cache/berth-tests/roots
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suites=(trixie sid)            # the releases the plugin is built for
slurm=slurmctld,slurmd,slurm-client,munge,libseccomp2,e2fsprogs   # mkfs.ext4: kept named containers
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
for suite in "${suites[@]}" bookworm; do
    # (a root made before e2fsprogs was in the list is made again)
    [ -x "$dir/$suite/usr/sbin/slurmd" ] && [ -x "$dir/$suite/usr/sbin/mkfs.ext4" ] && continue
    include=$slurm,libslurm-dev
    [ "$suite" = bookworm ] && include=$slurm,squashfs-tools   # and what berth's package depends on
    echo "making the $suite root with debootstrap"
    rm -rf "$dir/$suite.tmp" "$dir/$suite"
    debootstrap --variant=minbase \
        --include="$include" \
        "$suite" "$dir/$suite.tmp" "$mirror" >"$dir/$suite.log" 2>&1 \
        || { tail -20 "$dir/$suite.log" >&2; echo "debootstrap of $suite failed" >&2; exit 1; }
    mv "$dir/$suite.tmp" "$dir/$suite"
done
# An image for the MPI tests (tests/tests/slurm_mpi.rs): Debian 12 with
# Open MPI and mpi4py, used as a directory image.
mpi_root=$dir/bookworm-mpi
if ! [ -x "$mpi_root/usr/bin/mpirun" ] || ! [ -d "$mpi_root/usr/lib/python3/dist-packages/mpi4py" ]; then
    echo "making the Open MPI image root with debootstrap"
    rm -rf "$mpi_root.tmp" "$mpi_root"
    debootstrap --variant=minbase --include=openmpi-bin,python3-mpi4py \
        bookworm "$mpi_root.tmp" "$mirror" >"$mpi_root.log" 2>&1 \
        || { tail -20 "$mpi_root.log" >&2; echo "debootstrap of the MPI image failed" >&2; exit 1; }
    mv "$mpi_root.tmp" "$mpi_root"
fi
exec 9>&-
for suite in "${suites[@]}"; do
    SLURM_INCLUDE_DIR="$dir/$suite/usr/include" cargo build --locked -q -p spank-berth
    mkdir -p "target/slurm-releases/$suite"
    cp target/debug/libspank_berth.so "target/slurm-releases/$suite/"
done
