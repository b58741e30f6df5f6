# Sourced by the bench scripts: from the repository root, installs the
# Debian packages named before `--` (with berth's own build dependencies)
# and builds the release binaries of the cargo arguments after it.
#     prepare PACKAGE... -- CARGO-BUILD-ARG...
prepare() {
    local packages=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do packages+=("$1"); shift; done
    shift
    bash scripts/install-deps.sh "${packages[@]}"
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    cargo build --locked --release "$@" 2>&1 | tail -1
}
