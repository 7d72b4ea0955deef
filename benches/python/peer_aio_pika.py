"""The end-to-end workload on aio-pika, as its docs do it: a robust
connection, a channel with publisher confirms (the default), each
`default_exchange.publish` awaited for its confirm (up to --confirm of
them in flight as tasks); the consumer is `queue.iterator()` with a QoS
prefetch, acked with `multiple=True` every --multi-ack-every."""

import asyncio
import collections

import aio_pika

from workload import Phase, parse_args, report


async def main():
    args = parse_args()
    body = b"x" * args.size
    conn = await aio_pika.connect_robust(args.url)
    async with conn:
        channel = await conn.channel()
        queue = await channel.declare_queue(exclusive=True)

        phase = Phase()
        exchange = channel.default_exchange
        in_flight = collections.deque()
        for _ in range(args.count):
            if len(in_flight) >= args.confirm:
                await in_flight.popleft()
            in_flight.append(
                asyncio.ensure_future(
                    exchange.publish(aio_pika.Message(body), routing_key=queue.name)
                )
            )
        while in_flight:
            await in_flight.popleft()
        publish = phase.stop(args.count)

        phase = Phase()
        await channel.set_qos(prefetch_count=args.prefetch)
        seen = 0
        async with queue.iterator() as messages:
            async for message in messages:
                assert len(message.body) == args.size
                seen += 1
                if seen % args.multi_ack_every == 0 or seen == args.count:
                    await message.ack(multiple=True)
                if seen >= args.count:
                    break
        consume = phase.stop(seen)
    report("aio-pika", args, publish, consume)


asyncio.run(main())
