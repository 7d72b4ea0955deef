#!/usr/bin/env bash
# Runs every benchmark and writes docs/benchmarks.md (the template is
# benches/benchmarks.md.in; each @NAME@ line is replaced by a table).
#
#   codec   criterion, carehare-core against amq-protocol (benches/codec.rs)
#   alloc   the counting-allocator test (benches/tests/allocations.rs)
#   e2e     every client side by side on the local broker (src/bin/e2e.rs)
#   growth  how cost grows, through `carehare perf` (src/bin/growth.rs)
#
# Needs the local broker (test-server/start.sh starts or reuses it) and
# Python 3 for the Python peers (a venv under benches/target/python/e2e,
# made here, with carehare and aio-pika from PyPI). About 15 minutes on 2
# cores. ROUNDS (default 3) sets the e2e rounds; ONLY=codec,alloc,e2e,growth
# runs a subset (the other tables are left as they were in the last run's
# files under benches/target/bench/). E2E_ARGS passes flags to the e2e
# runner (e.g. --extra-cli NAME=PATH to add another build of the CLI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
only=",${ONLY:-codec,alloc,e2e,growth},"  # ONLY=none only rewrites docs/benchmarks.md
out="$root/benches/target/bench"
mkdir -p "$out"

test-server/start.sh >/dev/null
echo "== build (release): the CLI and the bench binaries" >&2
cargo build --release -p carehare-cli
(cd benches && cargo build --release --bins)

venv=benches/target/python/e2e
if [[ ! -x $venv/bin/python ]]; then
  echo "== Python venv for the Python peers" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q carehare aio-pika
fi

cd benches
if [[ $only == *,codec,* ]]; then
  echo "== codec (criterion)" >&2
  cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3 >"$out/codec.log"
  target/release/codec-table >"$out/codec.md"
fi
if [[ $only == *,alloc,* ]]; then
  echo "== allocations" >&2
  cargo test --release --test allocations -- --nocapture --test-threads 1 >"$out/alloc.log" 2>&1
  {
    echo '```text'
    grep -E 'allocations for' "$out/alloc.log" | sed 's/^test [a-z_]* \.\.\. //'
    echo '```'
  } >"$out/alloc.md"
fi
if [[ $only == *,e2e,* ]]; then
  echo "== end to end (every client, ${ROUNDS:-3} rounds)" >&2
  # E2E_ARGS adds peers, e.g. --extra-cli carehare-before=PATH (an older build).
  # shellcheck disable=SC2086
  target/release/e2e --rounds "${ROUNDS:-3}" ${E2E_ARGS:-} >"$out/e2e.md"
fi
if [[ $only == *,growth,* ]]; then
  echo "== how cost grows (carehare perf)" >&2
  target/release/growth >"$out/growth.md"
fi
cd "$root"

rabbit=$( (source test-server/env.sh && rabbitmqctl version 2>/dev/null) | tail -1 || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
machine="$(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB; RabbitMQ $rabbit on the same machine (the local test broker); $(rustc --version | cut -d' ' -f1-2); Python $(python3 --version | cut -d' ' -f2)"
python3 - "$out" "$machine" "$(date -u +%Y-%m-%d)" <<'PY'
import pathlib, sys
out, machine, date = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
text = pathlib.Path("benches/benchmarks.md.in").read_text()
for name in ["codec", "alloc", "e2e", "growth"]:
    f = out / f"{name}.md"
    table = f.read_text().rstrip() if f.exists() else "(not run)"
    text = text.replace(f"@{name.upper()}@", table)
# Hand-written, dated sections: the before/after comparison of the fast
# path and the verdict on the performance targets.
for name, path in [("BEFORE_AFTER", "benches/before-after.md"), ("TARGETS", "benches/targets.md")]:
    p = pathlib.Path(path)
    text = text.replace(f"@{name}@", p.read_text().rstrip() if p.exists() else "")
text = text.replace("@MACHINE@", machine).replace("@DATE@", date)
pathlib.Path("docs/benchmarks.md").write_text(text)
PY
echo "== wrote docs/benchmarks.md" >&2
