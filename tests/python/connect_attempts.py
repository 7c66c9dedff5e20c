"""Make TCP connection attempts in parallel threads and record what each
one returned, for the probe's connect tests.

Each --attempt is NAME:MODE:HOST:PORT[:SYNCNT]. MODE is one of
  blocking     connect() on a blocking socket
  nonblocking  connect() returning EINPROGRESS, then select() and SO_ERROR
  timeout      connect() with a 0.5 s socket timeout, then close()
  pending      connect() returning EINPROGRESS, then nothing: the socket
               stays open and the handshake in progress
SYNCNT sets TCP_SYNCNT, the number of SYN retransmissions before the
kernel gives up.

Prints `waiting` and waits for a line on stdin before the attempts, writes
{NAME: {"errno": int, "seconds": float}} to --results, prints `done`, and
then sleeps --hold seconds so that pending attempts stay in progress.
"""

import argparse
import errno
import json
import select
import socket
import sys
import threading
import time


def attempt(mode, host, port, syncnt):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if syncnt is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syncnt)
    address = (host, port)
    if mode == "blocking":
        try:
            sock.connect(address)
            return 0, sock
        except OSError as error:
            return error.errno, sock
    if mode == "timeout":
        sock.settimeout(0.5)
        try:
            sock.connect(address)
            return 0, sock
        except socket.timeout:
            sock.close()
            return errno.ETIMEDOUT, None
        except OSError as error:
            return error.errno, sock
    sock.setblocking(False)
    code = sock.connect_ex(address)
    if mode == "pending" or code != errno.EINPROGRESS:
        return code, sock
    select.select([], [sock], [], 30)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), sock


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempt", action="append", default=[])
    parser.add_argument("--results", required=True)
    parser.add_argument("--hold", type=float, default=0.0)
    args = parser.parse_args()

    print("waiting", flush=True)
    sys.stdin.readline()

    results = {}
    sockets = []
    lock = threading.Lock()

    def run(spec):
        name, mode, host, port, *rest = spec.split(":")
        syncnt = int(rest[0]) if rest else None
        start = time.monotonic()
        code, sock = attempt(mode, host, int(port), syncnt)
        with lock:
            results[name] = {"errno": code, "seconds": time.monotonic() - start}
            if sock is not None:
                sockets.append(sock)

    threads = [threading.Thread(target=run, args=(spec,)) for spec in args.attempt]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(args.results, "w") as output:
        json.dump(results, output)
    print("done", flush=True)
    time.sleep(args.hold)


if __name__ == "__main__":
    main()
