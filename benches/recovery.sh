#!/usr/bin/env bash
# Recovery side by side: carehare's connect_recovering and lapin's
# enable_auto_recover under the same faults (src/bin/recovery/), RUNS runs
# per client per scenario (default 5), one client at a time. Writes the
# table into docs/reliability.md (between the recovery-table markers) and
# the plot to docs/recovery.svg; the raw lines stay in
# benches/target/recovery/results.jsonl.
#
#   restart       the single node: stop.sh, 3 s, start.sh, under the
#                 exclusive lock /tmp/carehare-broker.lock
#   cut, cut-fin  every connection through an in-process proxy reset (RST)
#                 or closed (FIN), the proxy refusing for 3 s; under the
#                 shared broker lock
#   cluster-kill  SIGKILL of the cluster node the client uses (1, 2, 3 in
#                 turn), 3 s, started again; quorum queue; under
#                 /tmp/carehare-cluster.lock (waits up to 20 min for it)
#
# SCENARIOS=restart,cut,cut-fin,cluster-kill picks some; RUNS=N. With
# ONLY_REPORT=1 nothing runs: the table and plot are made again from the
# last results. About 25 minutes on 2 cores (a run that does not recover
# waits 60 s for it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
runs=${RUNS:-5}
scenarios=${SCENARIOS:-restart,cut,cut-fin,cluster-kill}
out="$root/benches/target/recovery"
results="$out/results.jsonl"
bin="$root/benches/target/release/recovery"
broker_lock=/tmp/carehare-broker.lock
cluster_lock=/tmp/carehare-cluster.lock
mkdir -p "$out"

(cd benches && cargo build --release --locked --bin recovery)

if [[ -z ${ONLY_REPORT:-} ]]; then
  flock -o "$broker_lock" test-server/start.sh >/dev/null
  flock -o -w 1200 "$cluster_lock" test-server/cluster-start.sh >/dev/null
  : >"$results"
  # The commit measured, for the report (ONLY_REPORT may come later).
  git describe --always --dirty >"$out/commit"
  for run in $(seq 1 "$runs"); do
    # Alternate which client goes first.
    if ((run % 2)); then clients="carehare lapin"; else clients="lapin carehare"; fi
    for scenario in ${scenarios//,/ }; do
      for client in $clients; do
        args=(run --client "$client" --scenario "$scenario" --run "$run" --out "$results")
        case $scenario in
        restart) flock -o "$broker_lock" "$bin" "${args[@]}" ;;
        cut | cut-fin) flock -o -s "$broker_lock" "$bin" "${args[@]}" ;;
        cluster-kill)
          flock -o -w 1200 "$cluster_lock" "$bin" "${args[@]}" --node $(((run - 1) % 3 + 1))
          ;;
        *) echo "unknown scenario $scenario" >&2 && exit 2 ;;
        esac
      done
    done
  done
  # Leave both brokers running, whatever happened.
  flock -o "$broker_lock" test-server/start.sh >/dev/null
  flock -o -w 1200 "$cluster_lock" test-server/cluster-start.sh >/dev/null
fi

rabbit=$( (source test-server/env.sh && rabbitmqctl version 2>/dev/null) | tail -1 || echo unknown)
lapin=$(awk '/^name = "lapin"$/ {getline; gsub(/[^0-9.]/, ""); print}' benches/Cargo.lock)
commit=$(cat "$out/commit" 2>/dev/null || git describe --always --dirty)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
date=$(date -u -r "$results" +%Y-%m-%d)
command="RUNS=$runs benches/recovery.sh"
[[ $scenarios == restart,cut,cut-fin,cluster-kill ]] || command="SCENARIOS=$scenarios $command"
"$bin" report --results "$results" --svg docs/recovery.svg --command "$command" >"$out/table.md"
python3 - "$out/table.md" "$date" "$rabbit" "$lapin" "$commit" "$(nproc) cores ($cpu)" <<'PY'
import pathlib, re, sys
table, date, rabbit, lapin, commit, cores = sys.argv[1:]
body = pathlib.Path(table).read_text().rstrip()
block = (
    "<!-- recovery-table:begin (written by benches/recovery.sh) -->\n"
    f"Measured {date} at commit `{commit}`: RabbitMQ {rabbit} on the same machine, "
    f"lapin {lapin}, carehare-tokio from this tree, both on tokio's multi-threaded runtime; "
    f"{cores}, shared with other builds and tests, so timings are noisy.\n\n"
    f"{body}\n\n![First confirm after the broker's port opened again, per run](recovery.svg)\n"
    "<!-- recovery-table:end -->"
)
doc = pathlib.Path("docs/reliability.md")
text = doc.read_text()
pattern = re.compile(r"<!-- recovery-table:begin.*?<!-- recovery-table:end -->", re.S)
if not pattern.search(text):
    sys.exit("docs/reliability.md has no recovery-table markers")
doc.write_text(pattern.sub(lambda _: block, text))
PY
echo "== wrote docs/reliability.md (recovery table) and docs/recovery.svg" >&2
