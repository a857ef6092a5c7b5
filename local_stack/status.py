"""`runbooks status`: what `runbooks up` runs where (its `stack.json`), and whether each piece
answers its own health check now. A process that is alive but does not answer is down too."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from local_stack.home import Piece, StackHome, default_home, pid_alive


@dataclass(frozen=True)
class PieceHealth:
    name: str
    piece: Piece
    healthy: bool
    detail: str


def _probe(name: str, piece: Piece, timeout: float) -> PieceHealth:
    if not pid_alive(piece.pid):
        return PieceHealth(name, piece, False, f"process {piece.pid} is gone")
    try:
        response = httpx.get(piece.health_url, timeout=timeout)
    except httpx.HTTPError as exc:
        reason = "connection refused" if isinstance(exc, httpx.ConnectError) else str(exc)
        return PieceHealth(name, piece, False, f"{piece.health_url}: {reason or type(exc)}")
    if response.status_code != 200:
        why = ""
        if name == "relay" and response.status_code == 503:
            why = " (the relay is up but cannot reach Prefect)"
        return PieceHealth(
            name, piece, False, f"{piece.health_url} answered {response.status_code}{why}"
        )
    return PieceHealth(name, piece, True, f"{piece.health_url} ok")


def check(home: StackHome, timeout: float = 5.0) -> list[PieceHealth] | None:
    """Each piece's health, or None when no `runbooks up` wrote a state into this home."""
    state = home.read_state()
    if state is None:
        return None
    return [_probe(name, piece, timeout) for name, piece in state.pieces().items()]


def run_status(path: Path | None = None, out: TextIO | None = None) -> int:
    """Print one line per piece; 0 when every piece is healthy, 1 otherwise (or nothing runs)."""
    out = out or sys.stdout
    home = StackHome(path or default_home())
    state = home.read_state()
    results = check(home)
    if state is None or results is None:
        print(
            f"no local stack in {home.path} (no stack.json): start one with "
            f"`runbooks up --home {home.path}`",
            file=out,
        )
        return 1
    started = state.started_at.strftime("%Y-%m-%d %H:%M:%S %Z")
    alive = "" if pid_alive(state.pid) else " (that process is gone: was it killed?)"
    print(f"runbooks up on {home.path}: pid {state.pid}, started {started}{alive}", file=out)
    width = max(len(r.name) for r in results)
    address = max(len(r.piece.address) for r in results)
    for result in results:
        mark = "✓" if result.healthy else "✗"
        print(
            f"{mark} {result.name.ljust(width)}  {result.piece.address.ljust(address)}  "
            f"pid {result.piece.pid}  {result.detail}",
            file=out,
        )
    down = [r.name for r in results if not r.healthy]
    if down:
        print(
            f"down: {', '.join(down)}. Restart the stack: stop `runbooks up` (Ctrl-C) and run "
            f"`runbooks up --home {home.path}` again; its history is kept.",
            file=out,
        )
        return 1
    return 0
