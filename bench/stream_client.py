#!/usr/bin/env python3
"""Send streaming chat completions with the ``openai`` SDK or ``httpx`` and
log the client's own timings, for the SLI accuracy benchmark.

All requests go one after another over one keep-alive connection. For each
request one JSON line goes to ``--log`` with CLOCK_MONOTONIC nanoseconds:
``start_ns`` just before the call, ``content_ns`` (the arrival of every
chunk with non-empty content), ``first_content_ns`` and ``end_ns`` (the
response consumed). ``--warmup`` requests go first and are not logged:
the first calls of a client are slow (lazy imports). With
``--wait-stdin`` it then prints ``waiting`` and reads one line from stdin,
so that a probe can attach before the logged requests.
"""

import argparse
import json
import sys
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", choices=["openai", "httpx"], required=True)
    parser.add_argument("--base-url", required=True, help="for example http://127.0.0.1:8000/v1")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--log", required=True)
    parser.add_argument("--wait-stdin", action="store_true")
    return parser.parse_args(argv)


def openai_sender(options):
    import openai

    client = openai.OpenAI(base_url=options.base_url, api_key="sk-bench", max_retries=0)

    def send(index, record):
        stream = client.chat.completions.create(
            model=options.model,
            messages=[{"role": "user", "content": f"Benchmark request {index}."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                record["content_ns"].append(time.monotonic_ns())

    return send


def httpx_sender(options):
    import httpx

    client = httpx.Client(base_url=options.base_url, headers={"authorization": "Bearer sk-bench"})

    def send(index, record):
        body = {
            "model": options.model,
            "messages": [{"role": "user", "content": f"Benchmark request {index}."}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with client.stream("POST", "/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    record["content_ns"].append(time.monotonic_ns())

    return send


def main(argv):
    options = parse_args(argv)
    send = openai_sender(options) if options.library == "openai" else httpx_sender(options)
    for index in range(options.warmup):
        send(-1 - index, {"content_ns": []})
    if options.wait_stdin:
        print("waiting", flush=True)
        sys.stdin.readline()
    with open(options.log, "a", encoding="utf-8") as log:
        for index in range(options.requests):
            record = {"request": index, "content_ns": []}
            record["start_ns"] = time.monotonic_ns()
            send(index, record)
            record["end_ns"] = time.monotonic_ns()
            if record["content_ns"]:
                record["first_content_ns"] = record["content_ns"][0]
            log.write(json.dumps(record) + "\n")
            log.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
