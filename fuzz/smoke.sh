#!/usr/bin/env bash
# Runs every fuzz target for a short while, starting from the tracked seeds.
#
#   fuzz/smoke.sh                     # 20 s per target
#   FUZZ_SECONDS=300 fuzz/smoke.sh    # longer
#   fuzz/smoke.sh field_table         # only some targets
#
# New inputs go to fuzz/corpus/<target> (gitignored scratch); crashes to
# fuzz/artifacts/<target>. Exits non-zero if any target crashed, hung or
# failed to build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

seconds="${FUZZ_SECONDS:-20}"
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -Cpasses=sancov-module);
# only a stable toolchain is installed here, and this lets it accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build

failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "smoke: $target for ${seconds}s" >&2
    # The first directory receives new inputs; the seeds are only read.
    if ! cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/corpus-seed/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "smoke: all ${#targets[@]} targets ran ${seconds}s without a crash" >&2
