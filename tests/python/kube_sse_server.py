"""A small OpenAI-style chat completions server for the Kubernetes
end-to-end test: POST /v1/chat/completions streams SSE chunks in the
format of the OpenAI API and ends with `data: [DONE]`.

Prints the port it listens on (127.0.0.1, chosen by the kernel) on the
first line of stdout.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNKS = ["Hello", " from", " the", " stand-in", " model", "."]
CHUNK_INTERVAL_SECS = 0.02


def chunk(content, finish_reason=None, usage=None):
    body = {
        "id": "chatcmpl-kube-e2e",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "delta": {"content": content} if content is not None else {},
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["choices"] = []
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [chunk(text) for text in CHUNKS]
        events.append(chunk(None, finish_reason="stop"))
        events.append(chunk(None, usage={"prompt_tokens": 9, "completion_tokens": len(CHUNKS), "total_tokens": 9 + len(CHUNKS)}))
        events.append(b"data: [DONE]\n\n")
        for event in events:
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
            time.sleep(CHUNK_INTERVAL_SECS)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
