"""What the Python end-to-end peers share: the workload's flags, CPU time
from getrusage (all threads) and the one JSON line each peer prints (the
schema of `carehare perf --json`)."""

import argparse
import json
import resource
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--size", type=int, default=12)
    p.add_argument("--confirm", type=int, default=1000)
    p.add_argument("--prefetch", type=int, default=300)
    p.add_argument("--multi-ack-every", type=int, default=30)
    return p.parse_args()


def _cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Phase:
    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = _cpu()

    def stop(self, messages):
        seconds = time.perf_counter() - self.wall
        cpu = _cpu() - self.cpu
        return {
            "messages": messages,
            "seconds": seconds,
            "msg_per_s": messages / seconds,
            "cpu_s": cpu,
            "cpu_us_per_msg": cpu * 1e6 / messages,
        }


def max_rss_kib():
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives execve, so it can
    # report the parent's size at the fork.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def report(tool, args, publish, consume):
    config = {
        "count": args.count,
        "size": args.size,
        "confirm": args.confirm,
        "prefetch": args.prefetch,
        "multi_ack_every": args.multi_ack_every,
    }
    print(
        json.dumps(
            {
                "tool": tool,
                "config": config,
                "publish": publish,
                "consume": consume,
                "latency_us": None,
                "max_rss_kib": max_rss_kib(),
            }
        ),
        flush=True,
    )
