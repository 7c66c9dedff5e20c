#!/usr/bin/env python3
"""The provider stand-in of openai_server.py behind TLS, for the TLS tests.

Routes, response formats, timing options and the JSON log are those of
openai_server.py; this script adds TLS with a certificate from
``--certfile``/``--keyfile``:

- HTTP/1.1 (the default): openai_server.py's own asyncio protocol on a TLS
  listener, so every SSE event is still one HTTP chunk written at a known
  time. ALPN offers only ``http/1.1``.
- HTTP/2 (``--http2``): Hypercorn serves the same route handlers through
  ASGI, one DATA frame per SSE event. ALPN offers ``h2`` and then
  ``http/1.1``. ``--split-probability`` has no effect here.

Over HTTP/1.1 a chat completions request with the header
``x-test-reset-after-events: N`` gets N content events, and then the
server resets the TCP connection without a TLS close_notify.

The logged ``recv_first_byte_ns`` is when the server read the decrypted
request (HTTP/1.1) or when the application received it (HTTP/2), and
``first_content_write_ns`` is before encryption, so the server's TTFT stays a
lower bound of any TTFT measured at the client.

On start it prints one line ``{"port": N}`` on stdout.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openai_server as base  # noqa: E402

# Connection-specific fields that HTTP/2 forbids (RFC 9113, section 8.2.2).
HTTP1_ONLY_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade"}


class AsgiResponder(base.Responder):
    """A Responder that sends ASGI messages in order from a queue, so that
    the synchronous calls of the route handlers keep their places."""

    def __init__(self, send):
        super().__init__(transport=None)
        self.send = send
        self.queue = asyncio.Queue()
        self.sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self):
        while True:
            message = await self.queue.get()
            if message is None:
                return
            await self.send(message)

    def _write(self, message):
        self.queue.put_nowait(message)

    def _start(self, status, headers):
        self.status = status
        fields = [
            (name.lower().encode("latin-1"), str(value).encode("latin-1"))
            for name, value in headers
            if name.lower() not in HTTP1_ONLY_HEADERS
        ]
        self._write({"type": "http.response.start", "status": status, "headers": fields})

    def start_chunked(self, status, reason, headers):
        self._start(status, headers)

    async def send_chunk(self, data, carries_content=False):
        self._mark_content(carries_content)
        self._write({"type": "http.response.body", "body": data, "more_body": True})

    def end_chunked(self):
        self._write({"type": "http.response.body", "body": b"", "more_body": False})
        self.finished_ns = time.monotonic_ns()

    def send_full(self, status, reason, headers, body, carries_content=False):
        self._start(status, [*headers, ("content-length", str(len(body)))])
        self._mark_content(carries_content)
        self._write({"type": "http.response.body", "body": body, "more_body": False})
        self.finished_ns = time.monotonic_ns()

    async def close(self):
        self.queue.put_nowait(None)
        await self.sender


# Lets the client read the events before the reset discards what it has
# not read yet.
RESET_DELAY_SECS = 0.05


def install_reset_route():
    """Wrap the chat completions route with ``x-test-reset-after-events``."""
    key = ("POST", "/v1/chat/completions")
    original = base.ROUTES[key]

    async def handler(request, responder, rng, options):
        limit = request.headers.get("x-test-reset-after-events")
        if limit is None or responder.transport is None:
            return await original(request, responder, rng, options)
        send_chunk = responder.send_chunk

        async def send_then_reset(data, carries_content=False):
            transport = responder.transport
            if transport.is_closing():
                return
            await send_chunk(data, carries_content)
            if responder.content_events >= int(limit):
                await asyncio.sleep(RESET_DELAY_SECS)
                # SO_LINGER with a zero timeout turns close into a reset.
                raw = transport.get_extra_info("socket")
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()

        responder.send_chunk = send_then_reset
        return await original(request, responder, rng, options)

    base.ROUTES[key] = handler


def make_asgi_app(server):
    async def read_body(receive):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                return body

    async def lifespan(receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return

        received_ns = time.monotonic_ns()
        body = await read_body(receive)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        client = scope.get("client")
        request = base.Request(
            server.next_index(),
            scope["method"],
            scope["path"],
            headers,
            body,
            received_ns,
            client[1] if client else None,
        )
        responder = AsgiResponder(send)
        responder.rng = random.Random(f"{server.options.seed}:{request.index}")
        handler = base.ROUTES.get((request.method, request.path))
        facts = {}
        if handler is None:
            status, reason, fields, payload = base.openai_error(
                404,
                "Not Found",
                f"Invalid URL ({request.method} {request.path})",
                "invalid_request_error",
                None,
            )
            responder.send_full(status, reason, fields, payload)
        else:
            facts = await handler(request, responder, responder.rng, server.options)
        await responder.close()
        server.write_log(request, responder, facts)

    return app


def tls_context(certfile, keyfile, alpn):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(alpn)
    return context


def listening_socket(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


async def serve_http1(options, server, sock):
    context = tls_context(options.certfile, options.keyfile, ["http/1.1"])
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: base.HttpProtocol(server), sock=sock, ssl=context)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    async with listener:
        await listener.serve_forever()


async def serve_http2(options, server, sock):
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.certfile = options.certfile
    config.keyfile = options.keyfile
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    await serve(make_asgi_app(server), config)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--certfile", required=True, help="PEM server certificate chain")
    parser.add_argument("--keyfile", required=True, help="PEM private key of the certificate")
    parser.add_argument("--http2", action="store_true", help="serve HTTP/2 through Hypercorn")
    tls_options, rest = parser.parse_known_args(argv)
    options = base.parse_args(rest)
    options.certfile = tls_options.certfile
    options.keyfile = tls_options.keyfile

    install_reset_route()
    server = base.Server(options)
    sock = listening_socket(options.host, options.port)
    if tls_options.http2:
        asyncio.run(serve_http2(options, server, sock))
    else:
        asyncio.run(serve_http1(options, server, sock))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
