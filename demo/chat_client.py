#!/usr/bin/env python3
"""A demo chat workload: streams chat completions with the real ``openai`` SDK.

Each of ``--concurrency`` threads sends requests one after another on its
own keep-alive connection until the process is stopped, the way a chat
backend calls its model provider. It prints nothing per request: the point
of the demo is that llmslo measures it from the kernel without any help
from this process.
"""

import argparse
import itertools
import signal
import sys
import threading

import openai

PROMPTS = [
    "Summarise the incident report for the payments outage.",
    "Draft a reply to the customer who asked about refunds.",
    "List three risks in the attached deployment plan.",
    "Explain the difference between TTFT and end-to-end latency.",
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="for example http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    return parser.parse_args(argv)


def chat_forever(options, first_prompt):
    client = openai.OpenAI(base_url=options.base_url, api_key="demo-key-not-secret")
    for index in itertools.count(first_prompt):
        stream = client.chat.completions.create(
            model=options.model,
            messages=[{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass


def main(argv):
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for first_prompt in range(options.concurrency):
        threading.Thread(target=chat_forever, args=(options, first_prompt), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
