#!/usr/bin/env python3
"""The stand-in of openai_server.py plus the Anthropic Messages API.

``POST /v1/messages`` responds as Anthropic does: with a message object, or
with ``"stream": true`` with the named SSE events ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` ...,
``content_block_stop``, ``message_delta`` (with cumulative usage) and
``message_stop``. Every OpenAI route of openai_server.py is served too, so
one server can stand in for both providers.

The request header ``x-test-scenario`` selects an error: ``overloaded``
answers 529 with an ``overloaded_error`` body, and ``stream-error`` sends
an ``error`` event after a few text deltas and ends the stream without
``message_stop``.

A request whose system prompt or messages carry ``cache_control`` reports
cache reads in ``cache_read_input_tokens``.

Options, the log and the port line are those of openai_server.py.
"""

import asyncio
import json
import sys
import time

import openai_server
from openai_server import completion_pieces, count_prompt_tokens, route

# Anthropic responds to an alias with the dated model it resolved to.
ANTHROPIC_SNAPSHOTS = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
}


def anthropic_headers(rng, request_id):
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    return [
        ("date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
        ("connection", "keep-alive"),
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", reset),
        ("anthropic-ratelimit-input-tokens-limit", "2000000"),
        ("anthropic-ratelimit-input-tokens-remaining", "2000000"),
        ("anthropic-ratelimit-input-tokens-reset", reset),
        ("anthropic-ratelimit-output-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-remaining", "400000"),
        ("anthropic-ratelimit-output-tokens-reset", reset),
        ("anthropic-ratelimit-tokens-limit", "2400000"),
        ("anthropic-ratelimit-tokens-remaining", "2400000"),
        ("anthropic-ratelimit-tokens-reset", reset),
        ("request-id", request_id),
        ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
        ("x-robots-tag", "none"),
        ("server", "cloudflare"),
        ("cf-ray", "".join(rng.choices("0123456789abcdef", k=16)) + "-AMS"),
    ]


def uses_cache(body):
    """Return whether any system or message content block sets ``cache_control``."""
    blocks = []
    system = body.get("system")
    if isinstance(system, list):
        blocks += system
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            blocks += content
    return any(isinstance(block, dict) and "cache_control" in block for block in blocks)


def sse(event, document):
    """Encode one named SSE event. Anthropic repeats the name in ``type``."""
    return f"event: {event}\ndata: {json.dumps(document, separators=(',', ':'))}\n\n".encode()


@route("POST", "/v1/messages")
async def anthropic_messages(request, responder, rng, options):
    body = request.json()
    model = body.get("model", "claude-sonnet-4-5")
    response_model = ANTHROPIC_SNAPSHOTS.get(model, model)
    stream = bool(body.get("stream", False))
    scenario = request.headers.get("x-test-scenario", "")
    request_id = "req_011" + "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789", k=21))
    headers = anthropic_headers(rng, request_id)

    if scenario == "overloaded":
        error = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": request_id,
        }
        responder.send_full(
            529,
            "Overloaded",
            [("content-type", "application/json"), ("x-should-retry", "true"), *headers],
            json.dumps(error).encode(),
        )
        return {"model": model, "stream": stream, "error_type": "overloaded_error"}

    output_tokens = rng.randint(options.min_tokens, options.max_tokens)
    limit = body.get("max_tokens")
    stop_reason = "end_turn"
    if limit is not None and output_tokens >= int(limit):
        output_tokens = int(limit)
        stop_reason = "max_tokens"
    pieces = completion_pieces(rng, options, output_tokens)
    system = body.get("system") or ""
    if isinstance(system, list):
        system = " ".join(block.get("text", "") for block in system if isinstance(block, dict))
    uncached_tokens = count_prompt_tokens(body) + len(str(system).split())
    cache_read_tokens = rng.randint(1024, 2048) if uses_cache(body) else 0
    # Input as the probe reports it: uncached plus cache reads and writes.
    prompt_tokens = uncached_tokens + cache_read_tokens
    usage = {
        "input_tokens": uncached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    message_id = "msg_01" + "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789", k=22))
    facts = {
        "model": model,
        "response_model": response_model,
        "stream": stream,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "cached_tokens": cache_read_tokens,
        "finish_reason": stop_reason,
    }

    def gap():
        return rng.uniform(options.min_gap_ms, options.max_gap_ms) / 1000

    prefill = rng.uniform(options.min_ttft_ms, options.max_ttft_ms) / 1000

    if not stream:
        await asyncio.sleep(prefill + sum(gap() for _ in pieces))
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": response_model,
            "content": [{"type": "text", "text": "".join(pieces)}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        responder.send_full(
            200,
            "OK",
            [("content-type", "application/json"), *headers],
            json.dumps(message).encode(),
            carries_content=bool(pieces),
        )
        return facts

    # message_start carries the input counts and one output token so far.
    start_usage = {**usage, "output_tokens": 1}
    start = {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": response_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        },
    }
    stream_headers = [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        *headers,
    ]
    responder.start_chunked(200, "OK", stream_headers)
    await asyncio.sleep(prefill)
    await responder.send_chunk(sse("message_start", start))
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    await responder.send_chunk(sse("content_block_start", block))
    await responder.send_chunk(b'event: ping\ndata: {"type": "ping"}\n\n')

    for number, piece in enumerate(pieces):
        if number:
            await asyncio.sleep(gap())
        if scenario == "stream-error" and number == 2:
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            await responder.send_chunk(sse("error", error))
            responder.end_chunked()
            return {**facts, "error_type": "overloaded_error"}
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        await responder.send_chunk(sse("content_block_delta", delta), carries_content=True)

    await asyncio.sleep(gap())
    await responder.send_chunk(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    # message_delta repeats the cumulative counts, output tokens included.
    dropped = ("cache_creation", "service_tier")
    end_usage = {key: value for key, value in usage.items() if key not in dropped}
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": end_usage,
    }
    await responder.send_chunk(sse("message_delta", delta))
    await responder.send_chunk(sse("message_stop", {"type": "message_stop"}))
    responder.end_chunked()
    return facts


if __name__ == "__main__":
    try:
        asyncio.run(openai_server.main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
