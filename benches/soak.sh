#!/usr/bin/env bash
# The soak: MINUTES minutes (default 60) of 5,000 msg/s with publisher
# confirms, and a consumer acking each message, over two recovering
# connections through the fault proxy to the cluster's node c1, with a
# fault every 1-3 minutes (a link cut or reset, a black hole, a restart of
# c1). src/bin/soak/ is the program. It holds /tmp/carehare-cluster.lock
# exclusively throughout (waiting up to 20 min for it), so it never
# touches the shared test broker on 5672.
#
# Writes the raw results to benches/target/soak/ (soak.json, timeline.csv,
# the log), the plot to docs/soak.svg and the figures into
# docs/reliability.md (between the soak markers). With ONLY_REPORT=1
# nothing runs: the figures and plot are made again from the last
# soak.json. SOAK_ARGS passes more flags to `soak run` (e.g. a seed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
minutes=${MINUTES:-60}
# `just soak MINUTES=30` hands the recipe "MINUTES=30" as its argument.
minutes=${minutes#MINUTES=}
out="$root/benches/target/soak"
bin="$root/benches/target/release/soak"
cluster_lock=/tmp/carehare-cluster.lock
mkdir -p "$out"

(cd benches && cargo build --release --locked --bin soak)

if [[ -z ${ONLY_REPORT:-} ]]; then
  export SOAK_COMMIT
  SOAK_COMMIT=$(git describe --always --dirty)
  # shellcheck disable=SC2086 # SOAK_ARGS is a list of flags
  flock -o -w 1200 "$cluster_lock" bash -c \
    'test-server/cluster-start.sh >/dev/null && exec "$@"' soak \
    "$bin" run --minutes "$minutes" --out "$out" ${SOAK_ARGS:-} 2> >(tee "$out/soak.log" >&2)
fi

json="$out/soak.json"
rabbit=$( (source test-server/cluster-env.sh && rabbitmqctl version 2>/dev/null) | tail -1 || echo unknown)
commit=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("commit") or "unknown")' "$json")
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
date=$(date -u -r "$json" +%Y-%m-%d)
"$bin" report --json "$json" --svg docs/soak.svg --command "MINUTES=$minutes just soak" >"$out/table.md"
python3 - "$out/table.md" "$date" "$rabbit" "$commit" "$(nproc) cores ($cpu)" <<'PY'
import pathlib, re, sys
table, date, rabbit, commit, cores = sys.argv[1:]
body = pathlib.Path(table).read_text().rstrip()
block = (
    "<!-- soak:begin (written by benches/soak.sh) -->\n"
    f"Measured {date} at commit `{commit}`: RabbitMQ {rabbit}, the cluster's node c1, on the same "
    f"machine as the client (release build, tokio's multi-threaded runtime, 2 worker threads); "
    f"{cores}, loaded throughout by other builds, test suites and niced fuzzers.\n\n"
    f"{body}\n\n![Messages per second and the client's RSS over the soak, a line per fault](soak.svg)\n"
    "<!-- soak:end -->"
)
doc = pathlib.Path("docs/reliability.md")
text = doc.read_text()
pattern = re.compile(r"<!-- soak:begin.*?<!-- soak:end -->", re.S)
if not pattern.search(text):
    sys.exit("docs/reliability.md has no soak markers")
doc.write_text(pattern.sub(lambda _: block, text))
PY
echo "== wrote docs/reliability.md (soak) and docs/soak.svg" >&2
