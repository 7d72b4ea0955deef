"""Splits perf's folded stacks (inferno-collapse-perf) into the parts of a
client program's CPU, as a Markdown table in microseconds per message.

    python3 flame_parts.py MESSAGES NAME=FILE.folded [NAME=FILE.folded ...]

A sample in a system call is counted by the call: `futex` is threads of the
runtime waking and putting each other to sleep, `epoll_wait` is waiting for
the sockets, `send` and `recv` move the bytes (on loopback, `send` also
delivers them to the broker's socket). A sample in user space goes to the
innermost frame that belongs to a known part: the client library and the
program, the runtime (tokio and its parking), or `futures` (the program's
`FuturesUnordered`). A leaf such as `memcpy` or `malloc` is counted for
whoever called it.
"""

import sys
from collections import Counter

SYSCALLS = [
    ("futex", "futex"),
    ("epoll_wait", "epoll_wait"),
    ("sendto", "send"),
    ("sendmsg", "send"),
    ("writev", "send"),
    ("sys_write", "send"),
    ("recvfrom", "recv"),
    ("recvmsg", "recv"),
    ("readv", "recv"),
    ("sys_read", "recv"),
]
CLIENT = ("carehare", "peer_plain", "peer_amqprs", "amqprs", "amq_protocol")
RUNTIME = ("tokio", "parking_lot", "mio::")
PARTS = ["client", "futures", "runtime", "futex", "epoll_wait", "send", "recv", "other kernel", "other"]


def part(frames):
    for f in frames:
        if f.startswith("__x64_sys_") or f.startswith("__do_sys_"):
            for key, name in SYSCALLS:
                if key in f:
                    return name
            return "other kernel"
    if any(f.startswith("asm_") or f.startswith("ret_from_fork") for f in frames):
        return "other kernel"
    for f in reversed(frames):
        if any(c in f for c in CLIENT):
            return "client"
        if any(r in f for r in RUNTIME):
            return "runtime"
        if "futures_util" in f:
            return "futures"
    return "other"


def main():
    messages = int(sys.argv[1])
    print("| program | " + " | ".join(PARTS) + " | all |")
    print("|---|" + "---|" * (len(PARTS) + 1))
    for arg in sys.argv[2:]:
        name, path = arg.split("=", 1)
        ns = Counter()
        with open(path) as folded:
            for line in folded:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack:
                    continue
                ns[part(stack.split(";"))] += int(count)
        # perf's cpu-clock weights are nanoseconds.
        us = {p: ns[p] / 1000 / messages for p in PARTS}
        total = sum(us.values())
        print(f"| {name} | " + " | ".join(f"{us[p]:.2f}" for p in PARTS) + f" | {total:.2f} |")


if __name__ == "__main__":
    main()
