#!/usr/bin/env python3
"""An authoritative DNS server for the stack's names, over UDP, with faults.

``--record NAME=IPV4`` (repeatable) gives a name its A record. Queries for
other types of a known name get an empty NOERROR answer, and unknown names
get NXDOMAIN. The ``"dns"`` object of the fault file may set ``delay_ms``
(each answer waits that long, without holding up other queries) and
``failure``: ``"servfail"`` or ``"nxdomain"`` for every query, or
``"drop"`` to answer nothing, so that resolvers time out.

Messages are parsed and built with dnspython. On start it prints one line
``{"port": N}`` on stdout.
"""

import argparse
import asyncio
import json
import signal
import sys
import time

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from faultfile import FaultFile

TTL_SECS = 0


class Resolver(asyncio.DatagramProtocol):
    def __init__(self, records, faults):
        self.records = records
        self.faults = faults
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, address):
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException as error:
            print(f"dns_server: ignoring a malformed query from {address}: {error}", file=sys.stderr)
            return
        failure = self.faults.get("failure", None)
        if failure == "drop":
            return
        response = self.answer(query, failure)
        delay_ms = float(self.faults.get("delay_ms", 0))
        wire = response.to_wire()
        if delay_ms > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(delay_ms / 1000, self.send_late, wire, address, delay_ms, time.monotonic_ns())
        else:
            self.transport.sendto(wire, address)

    def send_late(self, wire, address, delay_ms, started_ns):
        self.transport.sendto(wire, address)
        self.faults.note_delay(delay_ms, started_ns)

    def answer(self, query, failure):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if failure == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if failure == "nxdomain" or not query.question:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        address = self.records.get(name)
        if address is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, TTL_SECS, dns.rdataclass.IN, dns.rdatatype.A, address)
            )
        return response


def parse_records(values):
    records = {}
    for value in values:
        name, separator, address = value.partition("=")
        if not separator:
            raise SystemExit(f"dns_server: invalid --record {value!r}; write NAME=IPV4")
        records[name.strip().lower().rstrip(".")] = address.strip()
    return records


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], help="NAME=IPV4; repeatable")
    parser.add_argument("--faults", help="JSON fault file; its \"dns\" object is read")
    return parser.parse_args(argv)


async def main(argv):
    options = parse_args(argv)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    resolver = Resolver(parse_records(options.record), FaultFile(options.faults, "dns"))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: resolver, local_addr=(options.host, options.port)
    )
    print(json.dumps({"port": transport.get_extra_info("sockname")[1]}), flush=True)
    try:
        await stop
    finally:
        transport.close()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
