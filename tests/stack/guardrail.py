#!/usr/bin/env python3
"""A guardrail service shaped like Open Policy Agent's data API.

``POST /v1/data/llm/allow`` with ``{"input": {...}}`` answers
``{"decision_id": ..., "result": true}``, or ``false`` for prompts longer
than ``--max-prompt-chars``. The ``"guardrail"`` object of the fault file
may set ``delay_ms``: how long each decision waits before it answers.

It serves HTTP/1.1 with keep-alive on one thread per connection. On start
it prints one line ``{"port": N}`` on stdout.
"""

import argparse
import json
import signal
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from faultfile import FaultFile

POLICY_PATH = "/v1/data/llm/allow"


class PolicyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OPA/1.4.2"
    sys_version = ""

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0] != POLICY_PATH:
            self.send_json(404, {"code": "resource_not_found", "message": f"{self.path} is not a policy"})
            return
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            self.send_json(400, {"code": "invalid_parameter", "message": "the body is not JSON"})
            return

        delay_ms = float(self.server.faults.get("delay_ms", 0))
        if delay_ms > 0:
            started_ns = time.monotonic_ns()
            time.sleep(delay_ms / 1000)
            self.server.faults.note_delay(delay_ms, started_ns)
        prompt_chars = int((document.get("input") or {}).get("prompt_chars") or 0)
        allowed = prompt_chars <= self.server.max_prompt_chars
        self.send_json(200, {"decision_id": str(uuid.uuid4()), "result": allowed})

    def do_GET(self):
        if self.path == "/health":
            self.send_json(200, {})
        else:
            self.send_json(404, {"code": "resource_not_found", "message": f"{self.path} not found"})

    def send_json(self, status, document):
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        pass


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--faults", help="JSON fault file; its \"guardrail\" object is read")
    parser.add_argument("--max-prompt-chars", type=int, default=20000)
    return parser.parse_args(argv)


def main(argv):
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer((options.host, options.port), PolicyHandler)
    server.daemon_threads = True
    server.faults = FaultFile(options.faults, "guardrail")
    server.max_prompt_chars = options.max_prompt_chars
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
