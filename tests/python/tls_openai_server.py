"""OpenAI-style chat completions server over TLS, for the TLS tests.

Serves ``POST /v1/chat/completions`` in the format of the OpenAI API, with
streaming (SSE chunks, an optional usage chunk, ``data: [DONE]``) and
without. Hypercorn terminates TLS and speaks HTTP/1.1 or HTTP/2, chosen by
ALPN, so Go and curl clients can use either.

Each finished request appends one JSON line to ``--log`` with the server's
own time to first token: from the moment the application received the
request to the moment just before it handed the first content chunk to the
server. That is a lower bound of the TTFT that any observer of the client
can measure.
"""

import argparse
import asyncio
import json
import time
import uuid

from hypercorn.asyncio import serve
from hypercorn.config import Config

TOKENS = ["Hello", ",", " world", "!", " How", " are", " you", "?"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--log", required=True, help="JSON lines, one per request")
    parser.add_argument("--first-token-delay-ms", type=float, default=150.0)
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    return parser.parse_args()


def chunk(request_id, model, created, delta, finish_reason=None):
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }


def usage(prompt_tokens):
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(TOKENS),
        "total_tokens": prompt_tokens + len(TOKENS),
    }


def make_app(args):
    async def read_body(receive):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                return body

    async def send_json(send, status, payload):
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return

        received_at = time.monotonic()
        body = await read_body(receive)
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await send_json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        request = json.loads(body)
        model = request["model"]
        prompt_tokens = sum(len(m.get("content", "").split()) for m in request.get("messages", []))
        request_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        await asyncio.sleep(args.first_token_delay_ms / 1000)

        if not request.get("stream"):
            first_content_at = time.monotonic()
            await send_json(
                send,
                200,
                {
                    "id": request_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(TOKENS)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage(prompt_tokens),
                },
            )
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )

            async def event(payload):
                data = b"data: " + json.dumps(payload).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})

            await event(chunk(request_id, model, created, {"role": "assistant", "content": ""}))
            first_content_at = None
            for index, token in enumerate(TOKENS):
                if index > 0:
                    await asyncio.sleep(args.token_delay_ms / 1000)
                if first_content_at is None:
                    first_content_at = time.monotonic()
                await event(chunk(request_id, model, created, {"content": token}))
            await event(chunk(request_id, model, created, {}, finish_reason="stop"))
            if (request.get("stream_options") or {}).get("include_usage"):
                final = chunk(request_id, model, created, {})
                final["choices"] = []
                final["usage"] = usage(prompt_tokens)
                await event(final)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

        with open(args.log, "a", encoding="utf-8") as log:
            record = {
                "model": model,
                "stream": bool(request.get("stream")),
                "http_version": scope["http_version"],
                "server_ttft_us": int((first_content_at - received_at) * 1e6),
                "completion_tokens": len(TOKENS),
            }
            log.write(json.dumps(record) + "\n")

    return app


def main():
    args = parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.certfile = args.certfile
    config.keyfile = args.keyfile
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.loglevel = "WARNING"
    asyncio.run(serve(make_app(args), config))


if __name__ == "__main__":
    main()
