"""Fault settings that the stack's services read while they run.

The stack fixture writes one JSON object to a file, with one object per
service (``"guardrail"``, ``"dns"``, ``"provider"``, ...). A service reads
its own object and reads the file again whenever its modification time
changes, so that a fault can be switched on and off without a restart.
"""

import json
import os
import sys
import threading


class FaultFile:
    """One service's section of the fault file."""

    def __init__(self, path, section):
        self.path = path
        self.section = section
        self.stamp = None
        self.values = {}
        self.lock = threading.Lock()

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

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as file:
                return dict(json.load(file).get(self.section) or {})
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            print(f"{self.section}: ignoring unreadable fault file {self.path}: {error}", file=sys.stderr)
            return {}
