#!/usr/bin/env bash
# Runs every benchmark and writes docs/benchmarks.md (the template is
# benches/benchmarks.md.in; each @NAME@ line is replaced by a table).
#
#   codec   criterion, carehare-core against amq-protocol (benches/codec.rs)
#   alloc   the counting-allocator test (benches/tests/allocations.rs)
#   e2e     every client side by side on the local broker (src/bin/e2e.rs)
#   latency one message at a time: publish to delivery, carehare, amqprs and
#           lapin side by side (src/bin/latency.rs)
#   growth  how cost grows, through `carehare perf` (src/bin/growth.rs)
#   profile where the CPU of the plain user program (peer-plain) goes, beside
#           amqprs on the same current-thread runtime: instructions per
#           message counted by callgrind (repeatable on a loaded machine);
#           flame graphs from perf's cpu-clock samples drawn by inferno
#           into docs/flame-*.svg, on both tokio runtimes, and the parts
#           of the CPU in a table (python/flame_parts.py)
#   profile-consume  the consuming phase alone, on one thread: perf's
#           samples of the plain program, amqprs and the raw peer at 12 B
#           and 1 KiB (flame graphs of 1 KiB into docs/flame-consume-*.svg),
#           the kernel's part split by what it is for
#           (python/consume_parts.py), and the plain program with more CPU
#           spent on each delivery (PEER_WORK_NS)
#   profile-idle  the same for 10 s of 5,000 idle connections on a 1 s
#           heartbeat (PROFILE_IDLE_CONNECTIONS; sampled at 500 Hz)
#   scale   memory per idle connection (carehare, amqprs, lapin), 10,000 idle
#           carehare connections on a 1 s and a 10 s heartbeat, and 1 to 1,000 consumers
#           on one connection (src/bin/scale/)
#   queues  N queues with a producer and a consumer each, over one
#           connection and over N (src/bin/scale/)
#
# Then, whatever ran, the plots binary (src/bin/plots.rs) draws every
# figure file the programs wrote (benches/target/bench/fig-*.json) into
# docs/bench-*.svg.
#
# Needs the local broker (test-server/start.sh starts or reuses it) and
# Python 3 for the Python peers (a venv under benches/target/python/e2e,
# made here, with carehare and aio-pika from PyPI). About 25 minutes on 2
# cores. ROUNDS (default 3) sets the e2e, consumers and queues rounds,
# LATENCY_ROUNDS (default 11) the latency rounds; ONLY=codec,alloc,e2e,latency,growth,profile,profile-consume,profile-idle,scale,queues (any of
# the steps above) runs a subset (the other tables and figures are left as
# they were in the last run's files under benches/target/bench/). E2E_ARGS
# passes flags to the e2e runner (e.g. --extra-cli NAME=PATH to add another
# build of the CLI). SCALE_CONNECTIONS (default 10000) and SCALE_HEARTBEAT
# (seconds, a list, default "1 10": one run each) set the many idle
# connections of `scale`; the broker must allow that many sockets
# (test-server/node.sh raises its open-file limit to the hard limit when it
# starts it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
steps=codec,alloc,e2e,latency,growth,profile,profile-consume,profile-idle,scale,queues
only=",${ONLY:-$steps},"  # ONLY=none only rewrites docs/benchmarks.md
failed=""
out="$root/benches/target/bench"
mkdir -p "$out"

# Rewriting the docs alone needs no broker (and must not restart one that
# another checkout's tests are using with its own certificates).
[[ $only == ",none," ]] || test-server/start.sh >/dev/null
echo "== build (release): the CLI and the bench binaries" >&2
cargo build --release -p carehare-cli
(cd benches && cargo build --release --bins)

venv=benches/target/python/e2e
if [[ ! -x $venv/bin/python ]]; then
  echo "== Python venv for the Python peers" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q carehare aio-pika
fi

# Each step notes when it ran and how busy the machine was meanwhile
# (step-NAME.md, one table row; the table in the docs joins them), so
# that a reader can tell a quiet run from a contended one: the share of
# the cores the host gave to other guests (steal in /proc/stat) and of the
# time some runnable task waited for a core (/proc/pressure/cpu).
machine_now() {
  awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
  sed -n 's/^some .*total=\([0-9]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0
  date +%s%N
}
step_start() {
  step_name=$1
  step_began=$(date -u +%H:%M)
  mapfile -t step_machine < <(machine_now)
}
step_end() {
  local now
  mapfile -t now < <(machine_now)
  python3 - "$step_name" "$step_began" "$(date -u +%H:%M)" "${step_machine[@]}" "${now[@]}" \
    >"$out/step-$step_name.md" <<'PY'
import sys
name, began, ended, a_stat, a_some, a_ns, b_stat, b_some, b_ns = sys.argv[1:]
(a_steal, a_total), (b_steal, b_total) = map(int, a_stat.split()), map(int, b_stat.split())
steal = 100 * (b_steal - a_steal) / max(b_total - a_total, 1)
wall_us = (int(b_ns) - int(a_ns)) / 1000
waited = 100 * (int(b_some) - int(a_some)) / max(wall_us, 1)
print(f"| {name} | {began}–{ended} | {wall_us / 60e6:.1f} | {steal:.1f} % | {waited:.0f} % |")
PY
}

cd benches
if [[ $only == *,codec,* ]]; then
  step_start codec
  echo "== codec (criterion)" >&2
  cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3 >"$out/codec.log"
  target/release/codec-table >"$out/codec.md"
  step_end
fi
if [[ $only == *,alloc,* ]]; then
  step_start alloc
  echo "== allocations" >&2
  cargo test --release --test allocations -- --nocapture --test-threads 1 >"$out/alloc.log" 2>&1
  {
    echo '```text'
    grep -E 'allocations for' "$out/alloc.log" | sed 's/^test [a-z_]* \.\.\. //'
    echo '```'
  } >"$out/alloc.md"
  step_end
fi
if [[ $only == *,e2e,* ]]; then
  step_start e2e
  echo "== end to end (every client, ${ROUNDS:-3} rounds)" >&2
  # E2E_ARGS adds peers, e.g. --extra-cli carehare-before=PATH (an older build).
  # shellcheck disable=SC2086
  target/release/e2e --rounds "${ROUNDS:-3}" --fig-dir "$out" ${E2E_ARGS:-} >"$out/e2e.md"
  step_end
fi
if [[ $only == *,latency,* ]]; then
  step_start latency
  # More rounds than the others: slow round trips come in runs (a stall of
  # the broker or the machine for some milliseconds makes ten or twenty in
  # a row slow), and a 1 s round either catches one or not, whichever
  # client it is; medians of many rounds keep that out of the tails' ratios.
  echo "== latency, one message at a time (${LATENCY_ROUNDS:-11} rounds)" >&2
  target/release/latency --rounds "${LATENCY_ROUNDS:-11}" --fig-dir "$out" >"$out/latency.md"
  step_end
fi
if [[ $only == *,growth,* ]]; then
  step_start growth
  echo "== how cost grows (carehare perf)" >&2
  target/release/growth --fig-dir "$out" >"$out/growth.md"
  step_end
fi
if [[ $only == *,profile,* ]]; then
  step_start profile
  echo "== profile: the plain program beside amqprs (callgrind, perf + inferno)" >&2
  for tool in valgrind perf; do
    command -v "$tool" >/dev/null || { echo "profile needs $tool (Debian: valgrind, linux-perf)" >&2; exit 1; }
  done
  command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
  # Each program runs twice, with 1,000 and with 21,000 messages, and
  # callgrind dumps its counts as each phase ends (PhaseTimer::stop): part 1
  # is the start-up and the publishing, part 2 the consuming. A phase's
  # instructions per message are the difference between the two runs'
  # counts over the 20,000 messages more, which leaves the start-up out.
  phase_ir() { # peer size count part
    sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out/callgrind.$1.$2.$3.$4"
  }
  {
    echo "| body | program | publish (instructions per message) | consume | both | ratio to amqprs: publish | consume | both |"
    echo "|---|---|---|---|---|---|---|---|"
    for size in 12 1024; do
      declare -A pub=() con=()
      for peer in plain amqprs; do
        for count in 1000 21000; do
          PEER_RUNTIME=current_thread valgrind --tool=callgrind --dump-before='*PhaseTimer*stop*' \
            --callgrind-out-file="$out/callgrind.$peer.$size.$count" \
            "target/release/peer-$peer" --count "$count" --size "$size" >/dev/null 2>"$out/callgrind.$peer.$size.$count.log"
        done
        pub[$peer]=$((($(phase_ir $peer $size 21000 1) - $(phase_ir $peer $size 1000 1)) / 20000))
        con[$peer]=$((($(phase_ir $peer $size 21000 2) - $(phase_ir $peer $size 1000 2)) / 20000))
      done
      python3 - "$size" "${pub[plain]}" "${con[plain]}" "${pub[amqprs]}" "${con[amqprs]}" <<'PY'
import sys
size, (p, c, ap, ac) = sys.argv[1], map(int, sys.argv[2:])
print(f"| {size} B | carehare-plain | {p} | {c} | {p + c} | {p / ap:.2f}× | {c / ac:.2f}× | {(p + c) / (ap + ac):.2f}× |")
print(f"| {size} B | amqprs | {ap} | {ac} | {ap + ac} | 1.00× | 1.00× | 1.00× |")
PY
    done
  } >"$out/profile.md"
  # perf's samples of each program on both runtimes: a flame graph each,
  # and a table of the parts their CPU goes to (python/flame_parts.py).
  parts=()
  # name (the e2e table's), peer binary, runtime, and for the last the
  # guide's program awaited in `block_on`'s own future instead of a task.
  for profile in carehare-plain:plain:current_thread amqprs-ct:amqprs:current_thread \
    carehare-plain-mt:plain:multi_thread amqprs-mt:amqprs:multi_thread \
    carehare-plain-mt-main:plain:multi_thread:in-main; do
    IFS=: read -r name peer rt in_main <<<"$profile"
    in_main_env=()
    [[ -n $in_main ]] && in_main_env=(PEER_IN_MAIN=1)
    env PEER_RUNTIME="$rt" "${in_main_env[@]}" perf record -q -F 4000 -g --call-graph dwarf,16384 \
      -o "$out/perf.$name.data" "target/release/peer-$peer" --count 100000 --size 12 >/dev/null
    perf script -i "$out/perf.$name.data" 2>/dev/null | inferno-collapse-perf >"$out/perf.$name.folded"
    inferno-flamegraph --title "$name: 100,000 messages of 12 B published with confirms and consumed with acks ($rt tokio)" \
      --width 1400 --minwidth 2 <"$out/perf.$name.folded" >"$root/docs/flame-$name.svg"
    parts+=("$name=$out/perf.$name.folded")
  done
  python3 python/flame_parts.py 100000 "${parts[@]}" >"$out/profile_parts.md"
  step_end
fi
if [[ $only == *,profile-consume,* ]]; then
  step_start profile-consume
  echo "== profile: the consuming phase alone, on one thread (perf + inferno)" >&2
  command -v perf >/dev/null || { echo "profile-consume needs perf (Debian: linux-perf)" >&2; exit 1; }
  command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
  # perf starts with its events off (-D -1); the peer switches them on and
  # off through perf's control fifos as its consuming phase (the second
  # PhaseTimer) starts and ends, so nothing of publishing is sampled.
  rm -f "$out/perf.ctl" "$out/perf.ack"
  mkfifo "$out/perf.ctl" "$out/perf.ack"
  rows=()
  for size in 12 1024; do
    for profile in carehare-plain:plain amqprs-ct:amqprs raw:raw; do
      IFS=: read -r name peer <<<"$profile"
      base="$out/perf.consume.$name.$size"
      PEER_RUNTIME=current_thread PEER_PERF_PHASE=2 PEER_PERF_CTL="$out/perf.ctl" PEER_PERF_ACK="$out/perf.ack" \
        perf record -q -F 4000 -g --call-graph dwarf,16384 -D -1 --control "fifo:$out/perf.ctl,$out/perf.ack" \
        -o "$base.data" "target/release/peer-$peer" --count 100000 --size "$size" >"$base.json"
      perf script -i "$base.data" 2>/dev/null | inferno-collapse-perf >"$base.folded"
      if [[ $size == 1024 ]]; then
        inferno-flamegraph --title "$name: consuming 100,000 messages of 1 KiB with acks, the consuming phase alone (current-thread tokio)" \
          --width 1400 --minwidth 2 <"$base.folded" >"$root/docs/flame-consume-$name.svg"
      fi
      rows+=("$name=$size=$base.folded=$base.json")
    done
  done
  rm -f "$out/perf.ctl" "$out/perf.ack"
  python3 python/consume_parts.py 100000 "${rows[@]}" >"$out/profile_consume.md"
  # The same program spending more CPU on each delivery, as a user's
  # handler would (PEER_WORK_NS), alternating, a round of each at a time.
  runs=()
  for round in $(seq "${ROUNDS:-3}"); do
    for size in 12 1024; do
      for work in 0 1000 2000 4000; do
        f="$out/consume-work.$size.$work.$round.json"
        PEER_RUNTIME=current_thread PEER_WORK_NS=$work target/release/peer-plain --count 100000 --size "$size" >"$f"
        runs+=("$size=$work=$f")
      done
    done
  done
  python3 - "$out" "${runs[@]}" >"$out/consume_work.md" <<'PY'
import json, pathlib, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
out = pathlib.Path(sys.argv[1])
for arg in sys.argv[2:]:
    size, work, path = arg.split("=", 2)
    runs[(int(size), int(work))].append(json.loads(open(path).read().strip().splitlines()[-1])["consume"])
keys = ["msg_per_s", "cpu_us_per_msg", "user_us_per_msg", "sys_us_per_msg", "sleeps_per_1k_msg"]
print("| body | work per delivery (ns) | deliveries/s | CPU (µs/delivery) | user | kernel | sleeps per 1k deliveries |")
print("|---|---|---|---|---|---|---|")
series = defaultdict(list)
for (size, work), phases in sorted(runs.items()):
    m = {k: statistics.median(p[k] for p in phases) for k in keys}
    print(f"| {size} B | {work} | {m['msg_per_s'] / 1000:.1f}k | {m['cpu_us_per_msg']:.2f} | {m['user_us_per_msg']:.2f} | {m['sys_us_per_msg']:.2f} | {m['sleeps_per_1k_msg']:.0f} |")
    series[f"{size} B" if size < 1024 else f"{size // 1024} KiB"].append((m["sleeps_per_1k_msg"], m["sys_us_per_msg"]))
# The kernel's part against how often the program slept: one point per
# amount of work, the most work at the left.
figure = {
    "kind": "lines",
    "title": "Consuming on one thread: the kernel's CPU follows the sleeps",
    "x_label": "sleeps per 1,000 deliveries",
    "y_label": "kernel CPU per delivery (µs)",
    "series": [{"name": name, "points": sorted(points)} for name, points in series.items()],
}
(out / "fig-consume-sleeps.json").write_text(json.dumps(figure, indent=2))
PY
  step_end
fi
if [[ $only == *,profile-idle,* ]]; then
  step_start profile-idle
  echo "== profile: idle connections (perf + inferno)" >&2
  command -v perf >/dev/null || { echo "profile-idle needs perf (Debian: linux-perf)" >&2; exit 1; }
  command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
  # Idle connections on a 1 s heartbeat: 10 s of samples from the middle of
  # the idle time, per heartbeat RabbitMQ sent (two a second each).
  # Half the scale step's connections: beside the broker's 1.5 cores for
  # 10,000 of them, perf's own load left RabbitMQ reading some sockets
  # more than 2 s late ("missed heartbeats from client"). The cost per
  # heartbeat is the figure here, not the count.
  idle_n=${PROFILE_IDLE_CONNECTIONS:-5000}
  rm -f "$out/perf.idle.data"
  # The runs above left a few hundred MB of perf data to write back: on
  # this machine that stalled the broker enough to fail handshakes of the
  # idle connections. The samples need every connection open through
  # the idle time (--check idle), not the broker's count after it.
  sync
  sleep 5
  PEER_RUNTIME=current_thread target/release/scale idle --connections "$idle_n" --heartbeat 1 --idle 30 --check idle \
    >/dev/null 2>"$out/idle-profile.log" &
  idle_pid=$!
  until grep -q "idle for" "$out/idle-profile.log" 2>/dev/null || ! kill -0 "$idle_pid" 2>/dev/null; do
    sleep 1
  done
  sleep 5
  # A run that ended before its idle time (a failed check: see its log)
  # leaves the last figures as they were.
  if kill -0 "$idle_pid" 2>/dev/null; then
    perf record -q -F 500 -g --call-graph dwarf,8192 -p "$idle_pid" -o "$out/perf.idle.data" -- sleep 10 >/dev/null
  fi
  if wait "$idle_pid" && [[ -s $out/perf.idle.data ]]; then
    perf script -i "$out/perf.idle.data" 2>/dev/null | inferno-collapse-perf >"$out/perf.idle.folded"
    inferno-flamegraph --title "carehare: $idle_n idle connections on a 1 s heartbeat, 10 s (current-thread tokio)" \
      --width 1400 --minwidth 2 <"$out/perf.idle.folded" >"$root/docs/flame-idle.svg"
    python3 python/flame_parts.py $((idle_n * 2 * 10)) "carehare, $idle_n idle connections=$out/perf.idle.folded" \
      >"$out/profile_idle.md"
  else
    failed+=" profile-idle"
  fi
  step_end
fi
if [[ $only == *,scale,* ]]; then
  step_start scale
  echo "== scale: idle connections, ${SCALE_CONNECTIONS:-10000} idle connections (heartbeat ${SCALE_HEARTBEAT:-1 10} s), consumers on one connection" >&2
  {
    target/release/scale idle-rss --out "$out"
    # A failed check (a connection lost) still leaves its table; the run
    # goes on and fails at the end.
    for hb in ${SCALE_HEARTBEAT:-1 10}; do
      target/release/scale idle --connections "${SCALE_CONNECTIONS:-10000}" \
        --heartbeat "$hb" || failed+=" scale-idle-${hb}s"
    done
    target/release/scale consumers --rounds "${ROUNDS:-3}" --out "$out"
  } >"$out/scale.md"
  step_end
fi
if [[ $only == *,queues,* ]]; then
  step_start queues
  echo "== queues: N producers and consumers over 1 and N connections" >&2
  target/release/scale queues --rounds "${ROUNDS:-3}" --out "$out" >"$out/queues.md"
  step_end
fi
cd "$root"

echo "== plots: every figure file into docs/bench-*.svg" >&2
benches/target/release/plots --dir "$out" --out docs

rabbit=$( (source test-server/env.sh && rabbitmqctl version 2>/dev/null) | tail -1 || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
machine="$(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB; RabbitMQ $rabbit on the same machine (the local test broker); $(rustc --version | cut -d' ' -f1-2); Python $(python3 --version | cut -d' ' -f2)"
python3 - "$out" "$machine" "$(date -u +%Y-%m-%d)" "$steps" <<'PY'
import pathlib, sys
out, machine, date, step_names = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
text = pathlib.Path("benches/benchmarks.md.in").read_text()
steps = []
for name in step_names.split(","):
    f = out / f"step-{name}.md"
    steps.append(f.read_text().rstrip() if f.exists() else f"| {name} | (no record) | | | |")
text = text.replace("@STEPS@", "| step | ran (UTC) | minutes | the host took | a task waited for a core |\n|---|---|---|---|---|\n" + "\n".join(steps))
for name in ["codec", "alloc", "e2e", "latency", "growth", "profile", "profile_parts", "profile_consume", "consume_work", "profile_idle", "scale", "queues"]:
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
if [[ -n $failed ]]; then
  echo "== failed:$failed" >&2
  exit 1
fi
