# carehare task runner. `just` is optional: every recipe is a plain script.

# Start the local broker, then `carehare perf` for 10 s: progress line and final table.
demo:
    scripts/demo

# Every check: fmt, clippy, unused deps, module cycles, unit, scripted-broker
# and live-broker tests.
test:
    scripts/test

# Every benchmark (codec, allocations, end to end against lapin, amqprs and
# the Python clients, latency one message at a time, how cost grows, where
# the plain program's CPU goes: callgrind and flame graphs, and the consuming
# phase alone beside amqprs and the raw peer; idle
# connections, many consumers, many queues); writes docs/benchmarks.md, its
# charts docs/bench-*.svg and docs/flame-*.svg. ~25 min.
bench:
    benches/run.sh

# Recovery side by side with lapin: broker restart, link cuts, cluster node
# kill, RUNS runs each (default 5); writes the table into
# docs/reliability.md and docs/recovery.svg. ~25 min; restarts the broker
# and kills cluster nodes (under their locks).
recovery-bench RUNS="5":
    RUNS={{RUNS}} benches/recovery.sh

# Soak: MINUTES minutes (default 60) of 5,000 msg/s with confirms and acks
# over recovering connections, a fault every 1-3 minutes (link cut, black
# hole, node restart) on the cluster's node c1 (under the cluster lock);
# writes the figures into docs/reliability.md and docs/soak.svg.
soak MINUTES="60":
    MINUTES={{MINUTES}} benches/soak.sh

# Start (or reuse) the private RabbitMQ node on 127.0.0.1.
broker-start:
    test-server/start.sh

# Stop the private RabbitMQ node.
broker-stop:
    test-server/stop.sh

# Run each fuzz target for SECONDS seconds.
fuzz SECONDS="60":
    FUZZ_SECONDS={{SECONDS}} fuzz/smoke.sh

# The docs, with the core's contract on the front page.
doc:
    cargo doc -p carehare-core --no-deps --open
