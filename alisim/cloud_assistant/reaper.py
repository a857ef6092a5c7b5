"""Command process groups end with alisim, even when alisim is SIGKILLed.

Cloud Assistant runs each command in its own session, so nothing the kernel does on
alisim's death reaches it. One small reaper process per Cloud Assistant holds the read
end of a pipe; alisim writes `+<pgid>` when a command starts and `-<pgid>` when it ends.
When the pipe closes (alisim exited, however it died), the reaper SIGKILLs every group still
registered and exits. This file runs as that process (`python -I -S reaper.py`): stdlib only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys

log = logging.getLogger("alisim.assistant")


class Reaper:
    """alisim's side: starts the reaper on first use and keeps it told of the live groups."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()

    def _spawn(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
            # Its own session: a Ctrl-C or a group kill aimed at alisim must not reach it.
            start_new_session=True,
        )
        for pgid in self._groups:
            self._write(f"+{pgid}\n")

    def _write(self, line: str) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(line.encode("ascii"))

    def _send(self, line: str) -> None:
        if self._process is None:
            self._spawn()
        try:
            self._write(line)
        except (BrokenPipeError, ValueError):
            log.warning("the command reaper exited; starting another")
            self._discard()
            self._spawn()

    def _discard(self) -> None:
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.kill()
            self._process.wait()
            self._process = None

    def start(self) -> None:
        """Start the reaper now, so no command runs before it is there to catch it."""
        if self._process is None or self._process.poll() is not None:
            self._process = None
            self._spawn()

    def watch(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._groups.discard(pgid)
        if self._process is not None:
            self._send(f"-{pgid}\n")

    def close(self) -> None:
        """Close the pipe: the reaper kills what is still registered and exits."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kill_all(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    groups: set[int] = set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def terminate(signum: int, frame: object) -> None:
        _kill_all(groups)
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    for line in sys.stdin.buffer:
        sign, number = line[:1], line[1:].strip()
        if not number.isdigit() or int(number) <= 1:
            continue
        if sign == b"+":
            groups.add(int(number))
        elif sign == b"-":
            groups.discard(int(number))
    _kill_all(groups)


if __name__ == "__main__":
    main()
