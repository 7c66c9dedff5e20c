"""Streaming chat completions through the ``openai`` SDK over HTTPS.

Prints one JSON line per request with the client's own time to first
content: from just before the SDK call to the first chunk with content. The
script waits for a line on stdin before the first request, so that a probe
can attach to the running process first.
"""

import argparse
import json
import sys
import time

import httpx
import openai


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--requests", type=int, default=1)
    args = parser.parse_args()

    client = openai.OpenAI(
        base_url=args.base_url,
        api_key="test-key",
        http_client=httpx.Client(verify=args.cafile),
        max_retries=0,
    )
    sys.stdin.readline()
    for _ in range(args.requests):
        result = {"client_ttft_us": 0, "content_events": 0, "completion_tokens": 0}
        start = time.monotonic()
        stream = client.chat.completions.create(
            model=args.model,
            messages=[{"role": "user", "content": "Say hello to the world"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if result["content_events"] == 0:
                    result["client_ttft_us"] = int((time.monotonic() - start) * 1e6)
                result["content_events"] += 1
            if chunk.usage:
                result["completion_tokens"] = chunk.usage.completion_tokens
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
