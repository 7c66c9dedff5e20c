"""Fault settings that the stack's services read while they run.

The stack fixture writes one JSON object to a file, with one object per
service (``"guardrail"``, ``"dns"``, ``"provider"``, ...). A service reads
its own object and reads the file again whenever its modification time
changes, so that a fault can be switched on and off without a restart.

A service that injects a delay for a fault notes each one it served with
``FaultFile.note_delay``: one JSON line in ``<section>-delays.jsonl`` beside
the fault file, with the CLOCK_MONOTONIC nanoseconds when the delay ended,
the requested delay and the one the service measured, in milliseconds.
A sleep overshoots the requested time by up to about a millisecond, so
the benchmark scores the probe against the delay that was served.
"""

import json
import os
import sys
import threading
import time


class FaultFile:
    """One service's section of the fault file."""

    def __init__(self, path, section):
        self.path = path
        self.section = section
        self.stamp = None
        self.values = {}
        self.lock = threading.Lock()
        self.delays = None

    def current(self):
        """Return the section as a dict; empty when the file or the section is missing."""
        if self.path is None:
            return {}
        with self.lock:
            try:
                stamp = os.stat(self.path).st_mtime_ns
            except FileNotFoundError:
                stamp = None
            if stamp != self.stamp:
                self.stamp = stamp
                self.values = self._read()
            return self.values

    def get(self, name, default):
        value = self.current().get(name)
        return default if value is None else value

    def note_delay(self, planned_ms, started_ns):
        """Record a delay of ``planned_ms`` that began at ``started_ns`` and ends now."""
        ended_ns = time.monotonic_ns()
        if self.path is None:
            return
        record = {"ended_ns": ended_ns, "planned_ms": planned_ms, "actual_ms": (ended_ns - started_ns) / 1e6}
        with self.lock:
            if self.delays is None:
                directory = os.path.dirname(os.path.abspath(self.path))
                self.delays = open(os.path.join(directory, f"{self.section}-delays.jsonl"), "a", encoding="utf-8")
            self.delays.write(json.dumps(record) + "\n")
            self.delays.flush()

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as file:
                return dict(json.load(file).get(self.section) or {})
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            print(f"{self.section}: ignoring unreadable fault file {self.path}: {error}", file=sys.stderr)
            return {}
