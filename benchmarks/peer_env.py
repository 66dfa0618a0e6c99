"""Peers in their own virtualenvs: create on first use, run a peer script, read its JSON.

A peer library from another ecosystem (diffrax on JAX; AMICI + pyPESTO) must never become
a dependency of physode, so each gets a virtualenv of its own under ``benchmarks/.peers/``
built from ``benchmarks/peers/requirements-NAME.txt``. A peer script reads its problem as
JSON on stdin and prints one JSON object; the benchmark puts it in the same table as ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"


def peer_python(name: str) -> Path | None:
    """The interpreter of peer ``name``'s virtualenv, created on first use; None (with a
    note on stderr) when it cannot be installed here."""
    env = PEERS / name
    python = env / "bin" / "python"
    stamp = env / ".installed"
    requirements = HERE / "peers" / f"requirements-{name}.txt"
    if stamp.exists() and python.exists():
        return python
    try:
        venv.create(env, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
                       check=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"peer {name}: cannot install ({exc}); its rows are left out", file=sys.stderr)
        return None
    stamp.touch()
    return python


def run_peer(name: str, script: str, spec: dict[str, Any], timeout: float = 1800) -> dict | None:
    """Run ``benchmarks/peers/SCRIPT`` in peer ``name``'s virtualenv with ``spec`` on stdin."""
    python = peer_python(name)
    if python is None:
        return None
    # tools the peer installed (swig for AMICI's model build) are on its own PATH
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(python), str(HERE / "peers" / script)], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        print(f"peer {name}: {script} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])
