#!/usr/bin/env python3
"""Send chat completions with the real ``openai`` SDK and log its own timings.

All requests go through one client, so they share one keep-alive
connection when run one after another. For each request one JSON line goes
to ``--log`` with CLOCK_MONOTONIC nanoseconds: just before the SDK call
(``start_ns``), when the first chunk with non-empty content arrived
(``first_content_ns``) and when the response was consumed (``end_ns``).

With ``--wait-stdin`` it reads one line from stdin before the first
request, after printing ``waiting``, so that a test can attach the probe
first. ``--warmup N`` sends N
unlogged requests before that: the SDK's first request is slow (lazy
imports, model classes built on first use), which would delay the reads of
the first logged one.
"""

import argparse
import json
import sys
import time

import openai


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="for example http://127.0.0.1:8000/v1")
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--no-usage", action="store_true", help="do not ask for the usage chunk")
    parser.add_argument("--log", required=True)
    parser.add_argument("--wait-stdin", action="store_true")
    parser.add_argument("--warmup", type=int, default=0, help="unlogged requests sent first")
    return parser.parse_args(argv)


def run_streaming(client, options, index):
    extra = {} if options.no_usage else {"stream_options": {"include_usage": True}}
    if options.max_tokens is not None:
        extra["max_tokens"] = options.max_tokens
    record = {"request": index, "stream": True}
    record["start_ns"] = time.monotonic_ns()
    stream = client.chat.completions.create(
        model=options.model,
        messages=[{"role": "user", "content": f"Say something, request {index}."}],
        stream=True,
        **extra,
    )
    content_events = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if "first_content_ns" not in record:
                record["first_content_ns"] = time.monotonic_ns()
            content_events += 1
        if chunk.usage is not None:
            record["completion_tokens"] = chunk.usage.completion_tokens
            record["prompt_tokens"] = chunk.usage.prompt_tokens
        record["response_model"] = chunk.model
    record["end_ns"] = time.monotonic_ns()
    record["content_events"] = content_events
    return record


def run_blocking(client, options, index):
    extra = {}
    if options.max_tokens is not None:
        extra["max_tokens"] = options.max_tokens
    record = {"request": index, "stream": False}
    record["start_ns"] = time.monotonic_ns()
    completion = client.chat.completions.create(
        model=options.model,
        messages=[{"role": "user", "content": f"Say something, request {index}."}],
        **extra,
    )
    record["end_ns"] = time.monotonic_ns()
    record["first_content_ns"] = record["end_ns"]
    record["completion_tokens"] = completion.usage.completion_tokens
    record["prompt_tokens"] = completion.usage.prompt_tokens
    record["response_model"] = completion.model
    return record


def main(argv):
    options = parse_args(argv)
    client = openai.OpenAI(base_url=options.base_url, api_key="sk-llmslo-test", max_retries=0)
    run = run_blocking if options.no_stream else run_streaming
    for index in range(options.warmup):
        run(client, options, -1 - index)
    if options.wait_stdin:
        print("waiting", flush=True)
        sys.stdin.readline()
    with open(options.log, "a", encoding="utf-8") as log:
        for index in range(1, options.requests + 1):
            record = run(client, options, index)
            log.write(json.dumps(record) + "\n")
            log.flush()
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
