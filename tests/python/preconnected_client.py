#!/usr/bin/env python3
"""Open a TCP connection, wait at a gate, then send one streaming chat
completion request on it and read the response to the end.

The connection exists before the probe starts, so the probe must find it
in /proc instead of seeing its connect(). Prints ``waiting`` at the gate
and waits for a line on stdin.
"""

import json
import socket
import sys


def main(argv):
    host, port = argv[0], int(argv[1])
    connection = socket.create_connection((host, port))
    print("waiting", flush=True)
    sys.stdin.readline()

    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "preconnected"}],
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    connection.sendall(head + body)
    while connection.recv(65536):
        pass
    connection.close()


if __name__ == "__main__":
    main(sys.argv[1:])
