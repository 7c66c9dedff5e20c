#!/usr/bin/env python3
"""chat-api: the stack's inbound LLM service, built on real client libraries.

``POST /chat`` with ``{"prompt", "max_tokens", "user", "topic"}`` does, in
order:

1. a policy check: ``POST /v1/data/llm/allow`` to the guardrail (httpx);
2. retrieval: ``GET profile:<user>`` from Redis (redis-py), then the
   documents of the topic from PostgreSQL (psycopg, extended query
   protocol), through the SQL function ``retrieval_delay()`` that the
   stack's faults can slow down;
3. a streaming chat completion from the provider with the ``openai`` SDK,
   addressed by a host name that the resolver looks up;

and relays the tokens to its caller as server-sent events:
``data: {"delta": ...}`` per content chunk, then ``event: done`` with the
output token count. The response starts (status line and headers) only
when the first token has arrived, so that a failed dependency can still
answer with an error status and the caller's first byte is the first
token. A provider stream that breaks after that closes the connection
without the end of the chunked body, as a relay that lost its upstream
does.

Modes:

- ``--mode sync``: ``http.server.ThreadingHTTPServer``; one thread handles
  each connection and makes every call of a request itself.
- ``--mode async``: FastAPI on uvicorn; one event loop interleaves the
  requests (the resolver still runs in a worker thread).

With ``--propagate-traceparent`` the guardrail and provider calls carry the
inbound request's W3C trace id in a ``traceparent`` header with a new
span id; without it they carry none. ``--provider-connection per-request``
opens a new provider connection for every request, so that every request
resolves the provider's name and connects; ``pooled`` keeps connections
alive.

On start, once its dependencies answer, it prints one line
``{"port": N}`` on stdout.
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

RETRIEVAL_QUERY = (
    "SELECT d.id, d.title FROM retrieval_delay() AS gate "
    "CROSS JOIN documents AS d WHERE d.topic = %s ORDER BY d.id LIMIT 3"
)


class DependencyError(Exception):
    """A call the request depends on failed; ``status`` is what the caller gets."""

    def __init__(self, status, message, retry_after=None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def downstream_headers(options, inbound_traceparent):
    """Headers for outbound HTTP calls: a child ``traceparent`` in propagating mode."""
    if not options.propagate_traceparent:
        return {}
    match = TRACEPARENT.match(inbound_traceparent or "")
    trace_id = match.group(1) if match else os.urandom(16).hex()
    return {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}


def policy_input(body):
    return {"input": {"user": body.get("user", "anonymous"), "prompt_chars": len(body.get("prompt", ""))}}


def chat_messages(body, profile, titles):
    context = "; ".join(titles) or "no documents"
    system = f"You answer for {profile or 'a guest'}. Use these documents: {context}."
    return [{"role": "system", "content": system}, {"role": "user", "content": body.get("prompt", "")}]


def provider_error(error):
    """Map an ``openai`` SDK error to the status chat-api answers with."""
    if isinstance(error, openai.RateLimitError):
        return DependencyError(429, "the provider rate-limited the request", error.response.headers.get("retry-after"))
    if isinstance(error, openai.APIStatusError):
        return DependencyError(502, f"the provider answered {error.status_code}")
    return DependencyError(502, f"the provider call failed: {type(error).__name__}")


def provider_limits(options):
    if options.provider_connection == "per-request":
        return httpx.Limits(max_connections=100, max_keepalive_connections=0)
    return httpx.Limits(max_connections=100, max_keepalive_connections=20)


def sse_delta(text):
    return b"data: " + json.dumps({"delta": text}).encode() + b"\n\n"


def sse_done(output_tokens):
    return b"event: done\ndata: " + json.dumps({"output_tokens": output_tokens}).encode() + b"\n\n"


# ---- sync mode ----------------------------------------------------------------


class SyncDependencies:
    def __init__(self, options):
        import psycopg
        import psycopg_pool
        import redis

        self.options = options
        self.guardrail = httpx.Client(base_url=options.guardrail_url, timeout=30)
        self.redis = redis.Redis.from_url(options.redis_url, socket_timeout=30)
        self.postgres = psycopg_pool.ConnectionPool(
            options.postgres_dsn,
            min_size=2,
            max_size=16,
            kwargs={"autocommit": True},
            open=True,
        )
        self.postgres.wait(timeout=60)
        self.psycopg_error = psycopg.Error
        self.redis_error = redis.RedisError
        self.provider = openai.OpenAI(
            base_url=options.provider_url,
            api_key="sk-llmslo-stack",
            max_retries=options.provider_max_retries,
            http_client=httpx.Client(limits=provider_limits(options), timeout=60),
        )

    def check_ready(self):
        self.redis.ping()
        with self.postgres.connection() as connection:
            connection.execute("SELECT 1")
        self.guardrail.get("/health").raise_for_status()

    def allowed(self, body, headers):
        try:
            response = self.guardrail.post("/v1/data/llm/allow", json=policy_input(body), headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise DependencyError(502, f"the guardrail call failed: {type(error).__name__}") from error
        return bool(response.json().get("result"))

    def retrieve(self, body):
        try:
            profile = self.redis.get(f"profile:{body.get('user', 'anonymous')}")
            with self.postgres.connection() as connection:
                rows = connection.execute(RETRIEVAL_QUERY, (body.get("topic", "general"),)).fetchall()
        except (self.redis_error, self.psycopg_error) as error:
            raise DependencyError(503, f"retrieval failed: {type(error).__name__}") from error
        return (profile.decode() if profile else None), [row[1] for row in rows]

    def stream(self, body, messages, headers):
        """Start the provider stream; return (first content, rest of the stream)."""
        try:
            stream = self.provider.chat.completions.create(
                model=self.options.model,
                messages=messages,
                max_tokens=int(body.get("max_tokens", 32)),
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
            chunks = iter(stream)
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    return chunk.choices[0].delta.content, chunks
        except openai.OpenAIError as error:
            raise provider_error(error) from error
        raise DependencyError(502, "the provider stream ended without content")


class SyncChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chat-api"
    sys_version = ""

    def do_GET(self):
        if self.path == "/healthz":
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(404, {"error": f"{self.path} not found"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        if self.path != "/chat":
            self.send_json(404, {"error": f"{self.path} not found"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_json(400, {"error": "the body is not JSON"})
            return

        deps = self.server.deps
        headers = downstream_headers(deps.options, self.headers.get("traceparent"))
        try:
            if not deps.allowed(body, headers):
                self.send_json(403, {"error": "the policy denied the prompt"})
                return
            profile, titles = deps.retrieve(body)
            first, chunks = deps.stream(body, chat_messages(body, profile, titles), headers)
        except DependencyError as error:
            self.send_error_json(error)
            return

        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.write_chunk(sse_delta(first))
        output_tokens = None
        try:
            for chunk in chunks:
                if chunk.usage is not None:
                    output_tokens = chunk.usage.completion_tokens
                if chunk.choices and chunk.choices[0].delta.content:
                    self.write_chunk(sse_delta(chunk.choices[0].delta.content))
        except openai.OpenAIError as error:
            print(f"chat-api: the provider stream broke: {type(error).__name__}", file=sys.stderr)
            self.close_connection = True
            return
        self.write_chunk(sse_done(output_tokens))
        self.wfile.write(b"0\r\n\r\n")

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def send_error_json(self, error):
        extra = [("retry-after", error.retry_after)] if error.retry_after else []
        self.send_json(error.status, {"error": str(error)}, extra)

    def send_json(self, status, document, extra_headers=()):
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        pass


def serve_sync(options):
    deps = SyncDependencies(options)
    deps.check_ready()
    server = ThreadingHTTPServer((options.host, options.port), SyncChatHandler)
    server.daemon_threads = True
    server.deps = deps
    print(json.dumps({"port": server.server_address[1], "mode": "sync"}), flush=True)
    server.serve_forever()


# ---- async mode ---------------------------------------------------------------


class AsyncDependencies:
    def __init__(self, options):
        import psycopg
        import psycopg_pool
        import redis
        import redis.asyncio

        self.options = options
        self.guardrail = httpx.AsyncClient(base_url=options.guardrail_url, timeout=30)
        self.redis = redis.asyncio.Redis.from_url(options.redis_url, socket_timeout=30)
        self.postgres = psycopg_pool.AsyncConnectionPool(
            options.postgres_dsn,
            min_size=2,
            max_size=16,
            kwargs={"autocommit": True},
            open=False,
        )
        self.psycopg_error = psycopg.Error
        self.redis_error = redis.RedisError
        self.provider = openai.AsyncOpenAI(
            base_url=options.provider_url,
            api_key="sk-llmslo-stack",
            max_retries=options.provider_max_retries,
            http_client=httpx.AsyncClient(limits=provider_limits(options), timeout=60),
        )

    async def open(self):
        await self.postgres.open(wait=True, timeout=60)
        await self.redis.ping()
        async with self.postgres.connection() as connection:
            await connection.execute("SELECT 1")
        (await self.guardrail.get("/health")).raise_for_status()

    async def allowed(self, body, headers):
        try:
            response = await self.guardrail.post("/v1/data/llm/allow", json=policy_input(body), headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise DependencyError(502, f"the guardrail call failed: {type(error).__name__}") from error
        return bool(response.json().get("result"))

    async def retrieve(self, body):
        try:
            profile = await self.redis.get(f"profile:{body.get('user', 'anonymous')}")
            async with self.postgres.connection() as connection:
                cursor = await connection.execute(RETRIEVAL_QUERY, (body.get("topic", "general"),))
                rows = await cursor.fetchall()
        except (self.redis_error, self.psycopg_error) as error:
            raise DependencyError(503, f"retrieval failed: {type(error).__name__}") from error
        return (profile.decode() if profile else None), [row[1] for row in rows]

    async def stream(self, body, messages, headers):
        try:
            stream = await self.provider.chat.completions.create(
                model=self.options.model,
                messages=messages,
                max_tokens=int(body.get("max_tokens", 32)),
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
            chunks = stream.__aiter__()
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    return chunk.choices[0].delta.content, chunks
        except openai.OpenAIError as error:
            raise provider_error(error) from error
        raise DependencyError(502, "the provider stream ended without content")


def build_async_app(options):
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    deps = AsyncDependencies(options)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await deps.open()
        yield

    app = FastAPI(lifespan=lifespan)

    def error_response(error):
        headers = {"retry-after": error.retry_after} if error.retry_after else None
        return JSONResponse({"error": str(error)}, status_code=error.status, headers=headers)

    @app.get("/healthz")
    async def health():
        return {"status": "ok"}

    @app.post("/chat")
    async def chat(request: Request):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        headers = downstream_headers(options, request.headers.get("traceparent"))
        try:
            if not await deps.allowed(body, headers):
                return JSONResponse({"error": "the policy denied the prompt"}, status_code=403)
            profile, titles = await deps.retrieve(body)
            first, chunks = await deps.stream(body, chat_messages(body, profile, titles), headers)
        except DependencyError as error:
            return error_response(error)

        async def relay():
            yield sse_delta(first)
            output_tokens = None
            try:
                async for chunk in chunks:
                    if chunk.usage is not None:
                        output_tokens = chunk.usage.completion_tokens
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield sse_delta(chunk.choices[0].delta.content)
            except openai.OpenAIError as error:
                # Raising past the response makes uvicorn close the
                # connection without the end of the chunked body.
                print(f"chat-api: the provider stream broke: {type(error).__name__}", file=sys.stderr)
                raise
            yield sse_done(output_tokens)

        return StreamingResponse(relay(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    return app


def serve_async(options):
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                print(json.dumps({"port": options.port, "mode": "async"}), flush=True)

    config = uvicorn.Config(
        build_async_app(options),
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    AnnouncingServer(config).run()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--guardrail-url", default="http://127.0.0.1:8181")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=chat")
    parser.add_argument("--provider-url", default="http://llm-provider.stack.test:8000/v1")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument(
        "--provider-max-retries",
        type=int,
        default=0,
        help="retries of the openai SDK on 429, 5xx and connection errors",
    )
    parser.add_argument("--provider-connection", choices=["per-request", "pooled"], default="per-request")
    parser.add_argument("--propagate-traceparent", action="store_true")
    return parser.parse_args(argv)


def main(argv):
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Resolve once at start, so that a missing resolver setup fails here
    # with its own message rather than on the first request.
    try:
        socket.getaddrinfo(httpx.URL(options.provider_url).host, None)
    except OSError as error:
        print(f"chat-api: warning: cannot resolve the provider's host yet: {error}", file=sys.stderr)
    if options.mode == "sync":
        serve_sync(options)
    else:
        serve_async(options)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
