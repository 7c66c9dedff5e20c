#!/usr/bin/env python3
"""Write the fuzz corpus seeds from the wire test fixtures.

Each fixture in tests/fixtures/wire becomes one input per fuzz target that
parses its protocol, encoded as the operations targets/ops.rs
decodes. Run from anywhere after adding or changing fixtures; the seeds
are kept in corpus/ in the repository.
"""

import gzip
import pathlib
import re
import zlib

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "tests" / "fixtures" / "wire"
CORPUS = HERE / "corpus"


def unescape(text):
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        code = text[i + 1]
        if code == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
            continue
        out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[code]
        i += 2
    return bytes(out)


def load(path):
    """Return (settings, steps) of a fixture; steps are (kind, flow, data)."""
    settings = {}
    steps = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("|"):
            steps[-1][2].extend(unescape(line[1:]))
        elif line.startswith("@"):
            settings = dict(item.split("=") for item in line.split()[1:])
        elif line[0] in "<>":
            steps.append(["data", 0 if line[0] == ">" else 1, bytearray()])
        elif line.startswith("! gap"):
            _, _, direction, _, missing = line.split()
            steps.append(["gap", 0 if direction == ">" else 1, int(missing)])
        elif line.startswith("! end"):
            kind = line.split()[3]
            steps.append(["end", {"peer_closed": 0, "closed": 1, "reset": 2}[kind], None])
    return settings, steps


def encode(steps):
    out = bytearray()
    for kind, flow, value in steps:
        if kind == "data":
            data = bytes(value)
            for start in range(0, len(data), 65535):
                piece = data[start : start + 65535]
                out += bytes([flow]) + len(piece).to_bytes(2, "little") + piece
        elif kind == "gap":
            out += bytes([flow | 2]) + min(value, 65535).to_bytes(2, "little")
        else:
            out += bytes([4 | (flow << 3)]) + b"\0\0"
    return bytes(out)


def targets_of(name, settings):
    """Fuzz targets that parse this fixture, with each one's setup byte."""
    outbound = settings.get("role") == "outbound"
    flow_setup = 0 if outbound else 1
    udp = settings.get("transport") == "udp"
    dns_port = "53" in (settings.get("peer_port"), settings.get("local_port"))
    targets = {"connection": (1 if udp else 0) | (2 if dns_port else 0)}
    if name.startswith("h2_"):
        targets["http2"] = flow_setup
    elif name.startswith("postgres"):
        targets["postgres"] = flow_setup
    elif name.startswith("redis"):
        targets["redis"] = flow_setup
    elif name.startswith("dns"):
        targets["dns"] = 0 if udp else 1
    else:
        targets["http1"] = flow_setup
        targets["sse"] = None
    return targets


def main():
    for path in sorted(FIXTURES.glob("*.txt")):
        settings, steps = load(path)
        body = encode(steps)
        for target, setup in targets_of(path.stem, settings).items():
            folder = CORPUS / target
            folder.mkdir(parents=True, exist_ok=True)
            prefix = b"" if setup is None else bytes([setup])
            (folder / path.stem).write_bytes(prefix + body)

    sample = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    folder = CORPUS / "decode"
    folder.mkdir(parents=True, exist_ok=True)
    for setup, name, data in [(0, "gzip", gzip.compress(sample, mtime=0)), (1, "deflate", zlib.compress(sample))]:
        (folder / name).write_bytes(bytes([setup]) + encode([["data", 1, data[: len(data) // 2]], ["data", 1, data[len(data) // 2 :]]]))


if __name__ == "__main__":
    main()
