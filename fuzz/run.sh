#!/usr/bin/env bash
# Runs every fuzz target for a while; fails on the first crash, leak or timeout.
#
#   fuzz/run.sh            # 20 s per target (CI smoke run)
#   fuzz/run.sh 3600       # an hour per target
#   fuzz/run.sh 60 bridge  # only the named targets
#
# Works on a stable toolchain: cargo-fuzz passes nightly-only flags (-Z sanitizer, -Z ...) to
# rustc, which stable rustc accepts when RUSTC_BOOTSTRAP=1. Set FUZZ_SANITIZER=none to build
# without AddressSanitizer (faster, finds panics but not memory errors in C code).
# Crashing inputs land in fuzz/artifacts/<target>/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

seconds="${1:-20}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(manifest canonical export bridge)
fi

# One build for all targets up front, so the time limit below is spent fuzzing, not compiling.
cargo fuzz build --sanitizer "$sanitizer"

for target in "${targets[@]}"; do
    echo "== fuzz target $target: ${seconds}s"
    # Seeds stay read-only in corpus/<target>; new inputs go to a scratch corpus ignored by git.
    work="$here/target/corpus/$target"
    mkdir -p "$work" "$here/artifacts/$target"
    # Also read the seeds' sources where they live, so a regenerated snapshot (new key, new events)
    # or an edited example never leaves a target mutating only a stale copy.
    seeds=("$here/corpus/$target")
    case "$target" in
        export) seeds+=("$here/../snapshots") ;;
        manifest) seeds+=("$here/../examples") ;;
    esac
    cargo fuzz run --sanitizer "$sanitizer" "$target" "$work" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "== all fuzz targets ran ${seconds}s without a crash"
