#!/usr/bin/env python3
"""An open-loop load generator for chat-api that logs its own timings.

Request ``i`` starts at ``i / --rate`` seconds after the start, whether or
not earlier requests have finished (open loop), up to ``--max-in-flight``
at once. Each request's kind comes from ``--mix`` with a random generator
seeded by ``--seed``: a kind is ``NAME:PROMPT_WORDS:MAX_TOKENS:WEIGHT``.
Every request carries a W3C ``traceparent`` unless ``--no-traceparent``.

For each finished request it appends one JSON line to ``--log`` with
CLOCK_MONOTONIC nanoseconds (the probe's clock): ``start_ns`` just before
the request is sent, ``first_token_ns`` when the first ``data:`` event
with a delta arrived, ``end_ns`` when the response ended or failed, plus
``status``, ``error`` and ``output_tokens``. It runs until
``--duration-secs`` (0: until SIGTERM or SIGINT), then waits up to
``--drain-secs`` for requests in flight, logging those that do not finish
with ``"error": "cancelled"``.

It uses httpx's async client with keep-alive connections.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

import httpx

WORDS = (
    "latency budget incident deploy rollback retrieval guardrail provider token stream "
    "kernel socket cache query policy summary customer refund outage"
).split()


def parse_mix(text):
    kinds = []
    for part in text.split(","):
        fields = part.split(":")
        if len(fields) != 4:
            raise SystemExit(f"loadgen: invalid --mix entry {part!r}; write NAME:PROMPT_WORDS:MAX_TOKENS:WEIGHT")
        name, words, tokens, weight = fields
        kinds.append((name, int(words), int(tokens), float(weight)))
    return kinds


class Load:
    def __init__(self, options):
        self.options = options
        self.kinds = parse_mix(options.mix)
        self.rng = random.Random(options.seed)
        self.log = open(options.log, "a", encoding="utf-8")
        self.in_flight = asyncio.Semaphore(options.max_in_flight)
        self.skipped = 0

    def request_body(self, index):
        name, words, max_tokens, _ = self.rng.choices(self.kinds, weights=[k[3] for k in self.kinds])[0]
        prompt = " ".join(self.rng.choice(WORDS) for _ in range(words))
        body = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "user": f"user-{self.rng.randrange(8)}",
            "topic": self.rng.choice(["billing", "incidents", "deploys"]),
        }
        return name, body

    async def one(self, client, index, kind, body, scheduled_ns):
        record = {"request": index, "kind": kind, "scheduled_ns": scheduled_ns}
        headers = {}
        if not self.options.no_traceparent:
            trace_id = os.urandom(16).hex()
            headers["traceparent"] = f"00-{trace_id}-{os.urandom(8).hex()}-01"
            record["trace_id"] = trace_id
        record["start_ns"] = time.monotonic_ns()
        try:
            async with client.stream("POST", self.options.url, json=body, headers=headers) as response:
                record["status"] = response.status_code
                event = None
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                        if event == "done":
                            record["output_tokens"] = data.get("output_tokens")
                        elif data.get("delta") and "first_token_ns" not in record:
                            record["first_token_ns"] = time.monotonic_ns()
                    elif not line:
                        event = None
                if response.status_code >= 400:
                    record["error"] = f"status {response.status_code}"
        except asyncio.CancelledError:
            record["error"] = "cancelled"
        except (httpx.HTTPError, ValueError) as error:
            record["error"] = type(error).__name__
        record["end_ns"] = time.monotonic_ns()
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        self.in_flight.release()

    async def run(self, stop):
        limits = httpx.Limits(max_connections=self.options.max_in_flight, max_keepalive_connections=self.options.max_in_flight)
        timeout = httpx.Timeout(self.options.request_timeout_secs)
        tasks = set()
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            started = time.monotonic()
            index = 0
            print(json.dumps({"started_ns": time.monotonic_ns()}), flush=True)
            while not stop.is_set():
                due = started + index / self.options.rate
                if self.options.duration_secs and due - started >= self.options.duration_secs:
                    break
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, due - time.monotonic()))
                    break
                except asyncio.TimeoutError:
                    pass
                kind, body = self.request_body(index)
                if self.in_flight.locked():
                    # Open loop: a request that finds the limit reached is
                    # not sent late; it is counted and skipped.
                    self.skipped += 1
                else:
                    await self.in_flight.acquire()
                    scheduled_ns = time.monotonic_ns()
                    task = asyncio.create_task(self.one(client, index, kind, body, scheduled_ns))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                index += 1
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.options.drain_secs)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        print(json.dumps({"sent": index - self.skipped, "skipped": self.skipped}), flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/chat")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--duration-secs", type=float, default=0.0, help="0 runs until SIGTERM")
    parser.add_argument("--drain-secs", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--mix",
        default="short:12:16:0.5,long:40:32:0.5",
        help="request kinds NAME:PROMPT_WORDS:MAX_TOKENS:WEIGHT, comma-separated",
    )
    parser.add_argument("--max-in-flight", type=int, default=32)
    parser.add_argument("--request-timeout-secs", type=float, default=60.0)
    parser.add_argument("--no-traceparent", action="store_true")
    parser.add_argument("--log", required=True)
    return parser.parse_args(argv)


async def main(argv):
    options = parse_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Load(options).run(stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
