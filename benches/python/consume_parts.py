"""Splits perf's folded stacks of a consuming phase into the parts of its
CPU, as a Markdown table in microseconds per delivery, with the kernel's
part split by what it is for.

    python3 consume_parts.py MESSAGES NAME=FILE.folded=PEER.json [...]

PEER.json is the peer's JSON line for the same run; its consuming phase's
sleeps per thousand deliveries (`getrusage`'s voluntary context switches)
give the cost of one sleep. Columns:

- `client`, `runtime`: user space, as in flame_parts.py (`other` user
  space is added to `client`);
- `sleep`: samples in the kernel's scheduler under a system call: the
  thread going to sleep because nothing was left to read, and waking when
  more came (under `epoll_wait`, or under `recvfrom` for a client that
  blocks in its reads);
- `epoll_wait`, `recv`, `send`: the rest of those calls (the readiness
  check, taking the bytes and the TCP bookkeeping of a read, writing the
  acks);
- `other kernel`: interrupts, page faults and the other calls.
"""

import json
import sys
from collections import Counter

from flame_parts import part

PARTS = ["client", "runtime", "sleep", "epoll_wait", "recv", "send", "other kernel"]
SCHEDULER = ("__schedule", "schedule")


def consume_part(frames):
    p = part(frames)
    if p in ("other", "futures"):
        return "client"
    if p in ("epoll_wait", "recv", "futex") and any(f in SCHEDULER for f in frames):
        return "sleep"
    if p == "futex":
        return "other kernel"
    return p


def main():
    messages = int(sys.argv[1])
    print(
        "| program | body | "
        + " | ".join(PARTS)
        + " | all | kernel | sleeps per 1k deliveries | µs of `sleep` per sleep |"
    )
    print("|---|---|" + "---|" * (len(PARTS) + 4))
    for arg in sys.argv[2:]:
        name, size, folded_path, json_path = arg.split("=", 3)
        ns = Counter()
        with open(folded_path) as folded:
            for line in folded:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if stack:
                    ns[consume_part(stack.split(";"))] += int(count)
        with open(json_path) as f:
            sleeps = json.loads(f.read().strip().splitlines()[-1])["consume"]["sleeps_per_1k_msg"]
        # perf's cpu-clock weights are nanoseconds.
        us = {p: ns[p] / 1000 / messages for p in PARTS}
        total = sum(us.values())
        kernel = total - us["client"] - us["runtime"]
        per_sleep = us["sleep"] * 1000 / sleeps if sleeps else 0.0
        print(
            f"| {name} | {size} B | "
            + " | ".join(f"{us[p]:.2f}" for p in PARTS)
            + f" | {total:.2f} | {kernel:.2f} | {sleeps:.0f} | {per_sleep:.1f} |"
        )


if __name__ == "__main__":
    main()
