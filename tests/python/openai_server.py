#!/usr/bin/env python3
"""A stand-in for LLM provider APIs on loopback, faithful to their wire format.

It speaks HTTP/1.1 with keep-alive and pipelining over plain asyncio, so
that it controls every write: each SSE event is one HTTP chunk written at a
known time. Routes are registered with ``@route``; the OpenAI chat
completions API is built in, and other formats can be added the same way.

For every request it appends one JSON line to ``--log`` with
CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``, the clock the probe
uses): when the request's first byte was received, when the first
content-carrying event was written, and when the response was finished;
for streamed chat completions also the wait before the first event, as
requested (``prefill_planned_ms``) and as slept (``prefill_actual_ms``,
ending at ``prefill_ended_ns``).

Chunk sizes, gaps and token counts come from a random generator seeded with
``--seed`` and the request's index, so a run can be repeated exactly.

Faults: ``--rate-limit-burst-secs`` answers every request in the first
seconds of each ``--rate-limit-period-secs`` with 429 and ``retry-after``;
``--server-error-fraction`` answers that share of requests with 500;
``--truncate-fraction`` closes that share of streams after
``--truncate-after-events`` content events, without the terminal event.
``--faults FILE`` names a JSON file whose ``"provider"`` object overrides
any of these options (by their long names with underscores, such as
``min_ttft_ms``) while the server runs; it is read again when it changes.

On start it prints one line ``{"port": N}`` on stdout.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import string
import struct
import sys
import time

ROUTES = {}


def route(method, path):
    """Register a handler ``async def handler(request, responder, rng, options)``."""

    def register(handler):
        ROUTES[(method, path)] = handler
        return handler

    return register


class Request:
    def __init__(self, index, method, path, headers, body, received_ns, client_port):
        self.index = index
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.received_ns = received_ns
        self.client_port = client_port

    def json(self):
        return json.loads(self.body or b"{}")


class Responder:
    """Writes one response and records when its content went out."""

    def __init__(self, transport):
        self.transport = transport
        self.status = None
        self.first_content_write_ns = None
        self.finished_ns = None
        self.content_events = 0
        self.split_probability = 0.0
        self.rng = None

    def _write(self, data):
        if not self.transport.is_closing():
            self.transport.write(data)

    def _mark_content(self, carries_content):
        if carries_content:
            self.content_events += 1
            if self.first_content_write_ns is None:
                self.first_content_write_ns = time.monotonic_ns()

    def start_chunked(self, status, reason, headers):
        self.status = status
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines += ["transfer-encoding: chunked", "", ""]
        self._write("\r\n".join(lines).encode())

    async def send_chunk(self, data, carries_content=False):
        """Send one HTTP chunk; with --split-probability it may take two writes."""
        framed = b"%x\r\n" % len(data) + data + b"\r\n"
        if self.rng is not None and self.rng.random() < self.split_probability and len(framed) > 2:
            cut = self.rng.randrange(1, len(framed))
            self._mark_content(carries_content)
            self._write(framed[:cut])
            await asyncio.sleep(0.001)
            self._write(framed[cut:])
            return
        self._mark_content(carries_content)
        self._write(framed)

    def close(self):
        """Close the connection where the response stands."""
        self.transport.close()

    def end_chunked(self):
        self._write(b"0\r\n\r\n")
        self.finished_ns = time.monotonic_ns()

    def send_full(self, status, reason, headers, body, carries_content=False):
        self.status = status
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines += [f"content-length: {len(body)}", "", ""]
        self._mark_content(carries_content)
        self._write("\r\n".join(lines).encode() + body)
        self.finished_ns = time.monotonic_ns()


# ---- OpenAI chat completions -------------------------------------------------

# OpenAI responds to an alias with the dated snapshot it resolved to.
OPENAI_SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "o4-mini": "o4-mini-2025-04-16",
}

WORDS = (
    "the model streams tokens as server sent events while the client waits for "
    "latency budget retrieval guardrail provider kernel socket first token"
).split()


def random_piece(rng):
    """A token-sized piece of text: a word, part of one, or punctuation."""
    choice = rng.random()
    if choice < 0.1:
        return rng.choice([",", ".", "!", "?", ";"])
    word = rng.choice(WORDS)
    if choice < 0.3:
        return word[: rng.randint(1, len(word))]
    return " " + word


def completion_pieces(rng, options, count):
    """Generate ``count`` pieces. With --completion-marker, the first one is the marker."""
    pieces = [random_piece(rng) for _ in range(count)]
    if options.completion_marker and pieces:
        pieces[0] = " " + options.completion_marker
    return pieces


def openai_headers(rng, options, prompt_tokens):
    return [
        ("date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-llmslo-tests"),
        ("openai-processing-ms", str(rng.randint(5, 50))),
        ("openai-project", "proj_llmslotests"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "200000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", str(200000 - prompt_tokens)),
        ("x-ratelimit-reset-requests", "8.64s"),
        ("x-ratelimit-reset-tokens", "9ms"),
        ("x-request-id", "req_" + "".join(rng.choices("0123456789abcdef", k=32))),
        ("connection", "keep-alive"),
    ]


def count_prompt_tokens(body):
    words = 0
    for message in body.get("messages", []):
        content = message.get("content", "")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        words += len(str(content).split()) + 4
    return max(words, 1)


def obfuscation(rng):
    return "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 12)))


def choose_fault(rng, options):
    """Pick the fault of one request: ``rate_limited``, ``server_error``,
    ``truncated`` or None. Draws from ``rng`` only when a fault is set, so
    that runs without faults repeat their timings exactly."""
    if options.rate_limit_burst_secs > 0 and options.rate_limit_period_secs > 0:
        phase = (time.monotonic() - STARTED_MONOTONIC) % options.rate_limit_period_secs
        if phase < options.rate_limit_burst_secs:
            return "rate_limited"
    if options.server_error_fraction > 0 and rng.random() < options.server_error_fraction:
        return "server_error"
    if options.truncate_fraction > 0 and rng.random() < options.truncate_fraction:
        return "truncated"
    return None


STARTED_MONOTONIC = time.monotonic()


def openai_error(status, reason, message, error_type, code, extra_headers=()):
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}},
        indent=2,
    ).encode()
    headers = [("content-type", "application/json; charset=utf-8"), *extra_headers]
    return status, reason, headers, body


@route("POST", "/v1/chat/completions")
async def openai_chat_completions(request, responder, rng, options):
    forced = request.headers.get("x-test-status")
    if forced == "429":
        status, reason, headers, body = openai_error(
            429,
            "Too Many Requests",
            "Rate limit reached for requests",
            "requests",
            "rate_limit_exceeded",
            [("retry-after", "2")],
        )
        responder.send_full(status, reason, headers, body)
        return {}

    fault = choose_fault(rng, options)
    if fault == "rate_limited":
        status, reason, headers, body = openai_error(
            429,
            "Too Many Requests",
            "Rate limit reached for requests per min (RPM). Please try again later.",
            "requests",
            "rate_limit_exceeded",
            [
                ("retry-after", str(options.retry_after_secs)),
                ("x-ratelimit-remaining-requests", "0"),
            ],
        )
        responder.send_full(status, reason, headers, body)
        return {"fault": fault}
    if fault == "server_error":
        status, reason, headers, body = openai_error(
            500,
            "Internal Server Error",
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )
        responder.send_full(status, reason, headers, body)
        return {"fault": fault}

    body = request.json()
    model = body.get("model", "gpt-4o-mini")
    response_model = OPENAI_SNAPSHOTS.get(model, model)
    stream = bool(body.get("stream", False))
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")

    completion_tokens = rng.randint(options.min_tokens, options.max_tokens)
    finish_reason = "stop"
    if limit is not None and completion_tokens >= int(limit):
        completion_tokens = int(limit)
        finish_reason = "length"
    pieces = completion_pieces(rng, options, completion_tokens)
    prompt_tokens = count_prompt_tokens(body)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    completion_id = "chatcmpl-" + "".join(rng.choices(string.ascii_letters + string.digits, k=29))
    created = int(time.time())
    fingerprint = "fp_" + "".join(rng.choices("0123456789abcdef", k=10))
    headers = openai_headers(rng, options, prompt_tokens)
    facts = {
        "model": model,
        "response_model": response_model,
        "stream": stream,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "finish_reason": finish_reason,
    }

    def gap():
        return rng.uniform(options.min_gap_ms, options.max_gap_ms) / 1000

    prefill = rng.uniform(options.min_ttft_ms, options.max_ttft_ms) / 1000

    if not stream:
        await asyncio.sleep(prefill + sum(gap() for _ in pieces))
        document = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": response_model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(pieces),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": fingerprint,
        }
        payload = json.dumps(document, indent=2).encode()
        responder.send_full(
            200,
            "OK",
            [("content-type", "application/json"), *headers],
            payload,
            carries_content=bool(pieces),
        )
        return facts

    def chunk(choices, with_usage=None):
        document = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": response_model,
            "service_tier": "default",
            "system_fingerprint": fingerprint,
            "choices": choices,
        }
        if include_usage:
            document["usage"] = with_usage
        document["obfuscation"] = obfuscation(rng)
        return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"

    responder.start_chunked(200, "OK", [("content-type", "text/event-stream; charset=utf-8"), *headers])
    slept_from_ns = time.monotonic_ns()
    await asyncio.sleep(prefill)
    # The slow-first-token fault lengthens this sleep; the benchmark
    # compares the probe with what was slept, not with what was requested.
    facts["prefill_planned_ms"] = prefill * 1000
    facts["prefill_ended_ns"] = time.monotonic_ns()
    facts["prefill_actual_ms"] = (facts["prefill_ended_ns"] - slept_from_ns) / 1e6
    role = {"role": "assistant", "content": "", "refusal": None}
    await responder.send_chunk(
        chunk([{"index": 0, "delta": role, "logprobs": None, "finish_reason": None}])
    )
    for index, piece in enumerate(pieces):
        if fault == "truncated" and index == options.truncate_after_events:
            # The stream stops mid-response: no terminal event, no final chunk.
            responder.close()
            return {**facts, "fault": fault}
        await asyncio.sleep(gap())
        delta = {"content": piece}
        await responder.send_chunk(
            chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]),
            carries_content=True,
        )
    if fault == "truncated":
        responder.close()
        return {**facts, "fault": fault}
    await asyncio.sleep(gap())
    await responder.send_chunk(
        chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}])
    )
    if include_usage:
        await responder.send_chunk(chunk([], with_usage=usage))
    await responder.send_chunk(b"data: [DONE]\n\n")
    responder.end_chunked()
    return facts


# ---- OpenAI Responses ---------------------------------------------------------


def count_input_tokens(body):
    """Estimate the tokens of a Responses ``input``, a string or a list of items."""
    items = body.get("input", "")
    if isinstance(items, str):
        items = [{"content": items}]
    return count_prompt_tokens({"messages": items}) + len(str(body.get("instructions") or "").split())


@route("POST", "/v1/responses")
async def openai_responses(request, responder, rng, options):
    """Serve the Responses API: named SSE events from ``response.created`` to
    ``response.completed``, or one response object without ``stream``.

    Models whose name starts with ``o`` report reasoning tokens, which count
    in ``output_tokens`` but send no text. A request with
    ``prompt_cache_key`` reports half its input tokens as cached.
    """
    body = request.json()
    model = body.get("model", "gpt-4.1-mini")
    response_model = OPENAI_SNAPSHOTS.get(model, model)
    stream = bool(body.get("stream", False))
    text_tokens = rng.randint(options.min_tokens, options.max_tokens)
    pieces = completion_pieces(rng, options, text_tokens)
    reasoning_tokens = rng.randint(8, 64) if model.startswith("o") else 0
    input_tokens = count_input_tokens(body)
    cached_tokens = input_tokens // 2 if body.get("prompt_cache_key") else 0
    output_tokens = text_tokens + reasoning_tokens
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }
    response_id = "resp_" + "".join(rng.choices("0123456789abcdef", k=48))
    message_id = "msg_" + "".join(rng.choices("0123456789abcdef", k=48))
    reasoning_id = "rs_" + "".join(rng.choices("0123456789abcdef", k=48))
    headers = openai_headers(rng, options, input_tokens)
    facts = {
        "model": model,
        "response_model": response_model,
        "stream": stream,
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "reasoning_tokens": reasoning_tokens,
        "finish_reason": "completed",
    }

    def response_object(status, output, with_usage):
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": response_model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": "medium" if reasoning_tokens else None, "summary": None},
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage if with_usage else None,
            "user": None,
            "metadata": {},
        }

    reasoning_item = {"id": reasoning_id, "type": "reasoning", "summary": []}
    text = "".join(pieces)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    message = {
        "id": message_id,
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }
    output = ([reasoning_item] if reasoning_tokens else []) + [message]

    def gap():
        return rng.uniform(options.min_gap_ms, options.max_gap_ms) / 1000

    prefill = rng.uniform(options.min_ttft_ms, options.max_ttft_ms) / 1000

    if not stream:
        await asyncio.sleep(prefill + sum(gap() for _ in pieces))
        payload = json.dumps(response_object("completed", output, True), indent=2).encode()
        responder.send_full(
            200,
            "OK",
            [("content-type", "application/json"), *headers],
            payload,
            carries_content=bool(pieces),
        )
        return facts

    sequence = 0

    async def send(document, carries_content=False):
        nonlocal sequence
        document = {"type": document.pop("type"), "sequence_number": sequence, **document}
        sequence += 1
        event = document["type"]
        data = json.dumps(document, separators=(",", ":"))
        await responder.send_chunk(f"event: {event}\ndata: {data}\n\n".encode(), carries_content)

    responder.start_chunked(200, "OK", [("content-type", "text/event-stream; charset=utf-8"), *headers])
    await send({"type": "response.created", "response": response_object("in_progress", [], False)})
    await send({"type": "response.in_progress", "response": response_object("in_progress", [], False)})
    await asyncio.sleep(prefill)
    index = 0
    if reasoning_tokens:
        await send({"type": "response.output_item.added", "output_index": index, "item": reasoning_item})
        await send({"type": "response.output_item.done", "output_index": index, "item": reasoning_item})
        index += 1
    empty_message = {**message, "status": "in_progress", "content": []}
    await send({"type": "response.output_item.added", "output_index": index, "item": empty_message})
    empty_part = {**part, "text": ""}
    await send(
        {
            "type": "response.content_part.added",
            "item_id": message_id,
            "output_index": index,
            "content_index": 0,
            "part": empty_part,
        }
    )
    for number, piece in enumerate(pieces):
        if number:
            await asyncio.sleep(gap())
        await send(
            {
                "type": "response.output_text.delta",
                "item_id": message_id,
                "output_index": index,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
                "obfuscation": obfuscation(rng),
            },
            carries_content=True,
        )
    await send(
        {
            "type": "response.output_text.done",
            "item_id": message_id,
            "output_index": index,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        }
    )
    await send(
        {
            "type": "response.content_part.done",
            "item_id": message_id,
            "output_index": index,
            "content_index": 0,
            "part": part,
        }
    )
    await send({"type": "response.output_item.done", "output_index": index, "item": message})
    await asyncio.sleep(gap())
    await send({"type": "response.completed", "response": response_object("completed", output, True)})
    responder.end_chunked()
    return facts


# ---- OpenAI embeddings --------------------------------------------------------

EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


@route("POST", "/v1/embeddings")
async def openai_embeddings(request, responder, rng, options):
    """Serve embeddings as floats, or as base64 of little-endian float32 when
    the request sets ``encoding_format: base64`` (the Python SDK's default)."""
    body = request.json()
    model = body.get("model", "text-embedding-3-small")
    inputs = body.get("input", "")
    if isinstance(inputs, str):
        inputs = [inputs]
    dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS.get(model, 256))
    prompt_tokens = sum(max(len(str(text).split()), 1) for text in inputs)
    data = []
    for index, _text in enumerate(inputs):
        vector = [rng.uniform(-0.1, 0.1) for _ in range(dimensions)]
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    document = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    await asyncio.sleep(rng.uniform(options.min_ttft_ms, options.max_ttft_ms) / 1000)
    headers = openai_headers(rng, options, prompt_tokens)
    responder.send_full(200, "OK", [("content-type", "application/json"), *headers], json.dumps(document).encode())
    return {"model": model, "response_model": model, "stream": False, "prompt_tokens": prompt_tokens}


# ---- HTTP/1.1 ----------------------------------------------------------------


class HttpProtocol(asyncio.Protocol):
    """One connection: parses requests in order and serves them one by one."""

    def __init__(self, server):
        self.server = server
        self.buffer = bytearray()
        self.first_byte_ns = None
        self.requests = asyncio.Queue()
        self.worker = None
        self.transport = None
        self.client_port = None

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_port = peer[1] if peer else None
        self.worker = asyncio.ensure_future(self.serve())

    def connection_lost(self, exc):
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data):
        now = time.monotonic_ns()
        if not self.buffer:
            self.first_byte_ns = now
        self.buffer += data
        while True:
            request = self.parse_one()
            if request is None:
                break
            self.requests.put_nowait(request)
            self.first_byte_ns = now if self.buffer else None

    def parse_one(self):
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _version = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body_start = end + 4

        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, consumed = parse_chunked(self.buffer, body_start)
            if body is None:
                return None
            del self.buffer[:consumed]
        else:
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < body_start + length:
                return None
            body = bytes(self.buffer[body_start : body_start + length])
            del self.buffer[: body_start + length]

        index = self.server.next_index()
        return Request(index, method, path.split("?", 1)[0], headers, body, self.first_byte_ns, self.client_port)

    async def serve(self):
        while True:
            request = await self.requests.get()
            await self.server.answer(request, self.transport)
            if request.headers.get("connection", "").lower() == "close":
                self.transport.close()
                return


def parse_chunked(buffer, start):
    """Return (body, bytes consumed) of a complete chunked body, or (None, 0)."""
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None, 0
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", position)
            if trailer_end < 0:
                return None, 0
            return bytes(body), trailer_end + 2
        if len(buffer) < position + size + 2:
            return None, 0
        body += buffer[position : position + size]
        position += size + 2


class FaultOverrides:
    """The ``"provider"`` object of the ``--faults`` file, read again when
    the file's modification time changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.values = {}

    def current(self):
        if self.path is None:
            return self.values
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp != self.stamp:
            self.stamp = stamp
            self.values = self.read()
        return self.values

    def read(self):
        try:
            with open(self.path, encoding="utf-8") as file:
                return dict(json.load(file).get("provider") or {})
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            print(f"openai_server: ignoring unreadable faults file {self.path}: {error}", file=sys.stderr)
            return {}


def route_path(path):
    """Map an Azure OpenAI deployment path to the OpenAI route it mirrors.

    For example, ``/openai/deployments/NAME/chat/completions`` maps to
    ``/v1/chat/completions``.
    """
    prefix = "/openai/deployments/"
    if path.startswith(prefix):
        _deployment, _, rest = path[len(prefix) :].partition("/")
        return "/v1/" + rest
    return path


class Server:
    def __init__(self, options):
        self.base_options = options
        self.overrides = FaultOverrides(options.faults)
        self.count = 0
        self.log = open(options.log, "a", encoding="utf-8") if options.log else None

    @property
    def options(self):
        """The command-line options with the faults file's overrides."""
        overrides = self.overrides.current()
        if not overrides:
            return self.base_options
        merged = argparse.Namespace(**vars(self.base_options))
        for name, value in overrides.items():
            if hasattr(merged, name):
                setattr(merged, name, value)
        return merged

    def next_index(self):
        self.count += 1
        return self.count

    async def answer(self, request, transport):
        options = self.options
        responder = Responder(transport)
        rng = random.Random(f"{options.seed}:{request.index}")
        responder.rng = rng
        responder.split_probability = options.split_probability
        handler = ROUTES.get((request.method, route_path(request.path)))
        facts = {}
        if handler is None:
            status, reason, headers, body = openai_error(
                404,
                "Not Found",
                f"Invalid URL ({request.method} {request.path})",
                "invalid_request_error",
                None,
            )
            responder.send_full(status, reason, headers, body)
        else:
            facts = await handler(request, responder, rng, options)
        self.write_log(request, responder, facts)

    def write_log(self, request, responder, facts):
        if self.log is None:
            return
        record = {
            "request": request.index,
            "method": request.method,
            "path": request.path,
            "client_port": request.client_port,
            "status": responder.status,
            "recv_first_byte_ns": request.received_ns,
            "first_content_write_ns": responder.first_content_write_ns,
            "finished_ns": responder.finished_ns,
            "content_events": responder.content_events,
            **facts,
        }
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-tokens", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--min-ttft-ms", type=float, default=20.0, help="delay before the first event")
    parser.add_argument("--max-ttft-ms", type=float, default=60.0)
    parser.add_argument("--min-gap-ms", type=float, default=1.0, help="gap between events")
    parser.add_argument("--max-gap-ms", type=float, default=15.0)
    parser.add_argument(
        "--completion-marker",
        help="make this text the first piece of every generated completion",
    )
    parser.add_argument(
        "--split-probability",
        type=float,
        default=0.0,
        help="chance that an HTTP chunk is written in two parts 1 ms apart",
    )
    parser.add_argument(
        "--rate-limit-period-secs",
        type=float,
        default=0.0,
        help="length of the cycle of 429 bursts; 0 turns bursts off",
    )
    parser.add_argument(
        "--rate-limit-burst-secs",
        type=float,
        default=0.0,
        help="seconds at the start of each cycle in which every request gets 429",
    )
    parser.add_argument("--retry-after-secs", type=int, default=1, help="retry-after of 429 responses")
    parser.add_argument(
        "--server-error-fraction", type=float, default=0.0, help="share of requests answered with 500"
    )
    parser.add_argument(
        "--truncate-fraction",
        type=float,
        default=0.0,
        help="share of streams closed before their terminal event",
    )
    parser.add_argument(
        "--truncate-after-events",
        type=int,
        default=3,
        help="content events a truncated stream sends before it stops",
    )
    parser.add_argument("--faults", help="JSON file whose \"provider\" object overrides these options")
    return parser.parse_args(argv)


async def main(argv):
    options = parse_args(argv)
    server = Server(options)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: HttpProtocol(server), options.host, options.port)
    port = listener.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    async with listener:
        await listener.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
