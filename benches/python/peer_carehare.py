"""The end-to-end workload on Python carehare, as its README does it:
`await connection.publish(...)` resolves on the broker's confirm (we keep
up to --confirm of those futures in flight); `acking_consumer` with a
prefetch. carehare 1.0 has no multiple-ack, so every delivery is acked
(the --multi-ack-every flag is accepted and not applicable)."""

import asyncio
import collections
import os

import carehare

from workload import Phase, parse_args, report


async def main():
    args = parse_args()
    body = b"x" * args.size
    queue = "carehare-py-bench-%d" % os.getpid()
    async with carehare.connect(args.url) as conn:
        await conn.queue_declare(queue, exclusive=True)

        phase = Phase()
        in_flight = collections.deque()
        for _ in range(args.count):
            if len(in_flight) >= args.confirm:
                await in_flight.popleft()
            in_flight.append(conn.publish(body, routing_key=queue))
        while in_flight:
            await in_flight.popleft()
        publish = phase.stop(args.count)

        phase = Phase()
        seen = 0
        async with conn.acking_consumer(queue, prefetch_count=args.prefetch) as consumer:
            while seen < args.count:
                message, delivery_tag = await consumer.next_delivery()
                assert len(message) == args.size
                seen += 1
                consumer.ack(delivery_tag)
            consume = phase.stop(seen)
    report("carehare-py", args, publish, consume)


asyncio.run(main())
