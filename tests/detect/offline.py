"""Run a snippet in a fresh interpreter where any network use fails (the shipped models must
load and score offline)."""

from __future__ import annotations

import subprocess
import sys

_NO_NETWORK = (
    "import sys, socket\n"
    "def refuse(*a, **k):\n"
    "    raise OSError('network used')\n"
    "socket.socket.connect = refuse  # any network use would fail\n"
    "socket.create_connection = refuse\n"
)


def run_offline(code: str) -> str:
    """The snippet's standard output, stripped (it raises if the snippet fails)."""
    out = subprocess.run([sys.executable, "-c", _NO_NETWORK + code], capture_output=True, text=True, check=True)
    return out.stdout.strip()
