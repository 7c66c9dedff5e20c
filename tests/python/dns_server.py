"""A small authoritative DNS server over UDP for the DNS tests.

It answers A queries for the names given with --name NAME=IPV4, answers
other query types for those names with no records, and answers every
other name with NXDOMAIN. Each answer is sent --delay-ms after its query
arrived, so that the probe measures a known latency. Prints "listening"
once the socket is bound.
"""

import argparse
import socket
import struct
import sys
import threading

TYPE_A = 1
CLASS_IN = 1
RCODE_NXDOMAIN = 3


def parse_question(message):
    """Returns (name, query type, end offset) of the first question."""
    labels = []
    offset = 12
    while True:
        length = message[offset]
        offset += 1
        if length == 0:
            break
        labels.append(message[offset : offset + length].decode("ascii"))
        offset += length
    query_type, _ = struct.unpack("!HH", message[offset : offset + 4])
    return ".".join(labels).lower(), query_type, offset + 4


def build_answer(query, records):
    """Builds the response to `query` from the name -> IPv4 map."""
    query_id, flags = struct.unpack("!HH", query[:4])
    name, query_type, question_end = parse_question(query)
    question = query[12:question_end]
    recursion_desired = flags & 0x0100
    # QR and AA set, the opcode and RD copied from the query.
    response_flags = 0x8400 | (flags & 0x7800) | recursion_desired
    answers = b""
    count = 0
    if name not in records:
        response_flags |= RCODE_NXDOMAIN
    elif query_type == TYPE_A:
        # A compression pointer to the question's name at offset 12.
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, 60, 4)
        answers += socket.inet_aton(records[name])
        count = 1
    header = struct.pack("!HHHHHH", query_id, response_flags, 1, count, 0, 0)
    return header + question + answers


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--name", action="append", default=[])
    args = parser.parse_args()
    records = {}
    for entry in args.name:
        name, address = entry.split("=", 1)
        records[name.lower()] = address

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((args.address, args.port))
    print("listening", flush=True)
    while True:
        query, client = server.recvfrom(4096)
        try:
            answer = build_answer(query, records)
        except (IndexError, UnicodeDecodeError, struct.error) as error:
            print(f"invalid query from {client}: {error!r}", file=sys.stderr, flush=True)
            continue
        timer = threading.Timer(
            args.delay_ms / 1000, server.sendto, args=(answer, client)
        )
        timer.daemon = True
        timer.start()


if __name__ == "__main__":
    main()
