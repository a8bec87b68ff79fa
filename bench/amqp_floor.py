"""RabbitMQ's own publish-to-receive latency: the floor under broker mode's publish-to-start.

    python bench/amqp_floor.py                   # 1,500 messages at 200/s per queue kind
    python bench/amqp_floor.py --rate 200 --messages 3000

Raw pika, no database: one process publishes persistent messages at a steady rate, each
carrying its wall-clock send time, and another consumes them (prefetch 100, an ack each) and
records when each arrived. Measured for a classic and a quorum queue, with and without
publisher confirms (one wait per message). Conveyor's broker mode publishes to quorum queues
with confirms (spec.md#amqp), after the job's row is committed, and the consumer claims the
job in a transaction before it starts: its publish-to-start is this figure plus two commits.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid

import pika

AMQP_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PREFETCH = 100


def consume(queue: str, count: int, results: multiprocessing.Queue[list[float]]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH)
    delays: list[float] = []

    def received(ch: object, method: object, properties: object, body: bytes) -> None:
        delays.append((time.time() - float(body)) * 1000)
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        if len(delays) >= count:
            channel.stop_consuming()

    channel.basic_consume(queue, received)
    channel.start_consuming()
    results.put(delays)
    connection.close()


def measure(kind: str, confirm: bool, count: int, rate: float) -> dict[str, float]:
    queue = f"conveyor-bench-floor-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": kind})
    if confirm:
        channel.confirm_delivery()
    results: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    consumer = multiprocessing.Process(target=consume, args=(queue, count, results))
    consumer.start()
    try:
        time.sleep(1.0)  # the consumer's connection and basic_consume (not synchronisation)
        started = time.perf_counter()
        persistent = pika.BasicProperties(delivery_mode=2)
        for n in range(count):
            while (wait := started + n / rate - time.perf_counter()) > 0:
                time.sleep(wait)
            channel.basic_publish("", queue, repr(time.time()).encode(), persistent)
        delays = sorted(results.get(timeout=60 + count / rate))
    finally:
        consumer.join(timeout=10)
        if consumer.is_alive():
            consumer.kill()
        channel.queue_delete(queue)
        connection.close()
    return {
        "p50": statistics.median(delays),
        "p99": delays[min(len(delays) - 1, int(len(delays) * 0.99))],
        "max": delays[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    print(f"RabbitMQ publish-to-receive, {args.messages} messages at {args.rate:g}/s, ms")
    print("| queue | publisher confirms | p50 | p99 | max |")
    print("|---|---|---:|---:|---:|")
    for kind in ("classic", "quorum"):
        for confirm in (False, True):
            figures = measure(kind, confirm, args.messages, args.rate)
            print(
                f"| {kind} | {'yes' if confirm else 'no'} | {figures['p50']:.2f} | "
                f"{figures['p99']:.2f} | {figures['max']:.2f} |"
            )


if __name__ == "__main__":
    main()
