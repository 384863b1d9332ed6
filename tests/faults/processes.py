"""Real `mmgen` processes for the fault tests: started, polled, killed with SIGKILL, their output kept.

`Launcher` forks each command from the fork server (`forkserver.py`, the imports done once) or,
with `fresh=True`, starts a fresh `python -m mmgen`. Every command computes on one thread
(`CHILD_ENV`). A kill point (`kill_at`, see forkserver.py) makes a process SIGKILL itself at an
exact place in the code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN_TIMEOUT_S = 300
KILL_AT = "MMGEN_FAULTS_KILL_AT"  # read by forkserver.py in the child
# One compute thread per command: two cores, shared with the test process and (in the concurrency
# tests) a second command; OpenMP threads spinning on an oversubscribed core slow tiny ops tenfold.
CHILD_ENV = {"MMGEN_THREADS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


class Proc:
    """One started command: its pid, start time and output files."""

    def __init__(self, launcher: Launcher, pid: int, out: Path, err: Path, handle: Any = None) -> None:
        self.launcher, self.pid, self.out, self.err, self.handle = launcher, pid, out, err, handle
        self.started = time.monotonic()
        self.rc: int | None = None

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        if self.rc is None:
            self.rc = self.launcher._poll(self)
        return self.rc

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        """Wait for the exit; a command past `timeout` is killed and reported."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"`mmgen` pid {self.pid} ran past {timeout} s; stderr: {self.stderr()[-2000:]}")
            time.sleep(0.02)
        return int(self.rc)  # type: ignore[arg-type]

    def wait_until(self, moment: float) -> int | None:
        """Wait until `moment` (time.monotonic) or the exit, whichever comes first."""
        while self.poll() is None:
            left = moment - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(0.01, left))
        return self.rc

    def kill(self) -> int:
        """SIGKILL (a no-op on a process that already exited); returns the exit status."""
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.wait()

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace") if self.err.exists() else ""


class Launcher:
    """Starts real `mmgen` processes: forked from the fork server, or fresh interpreters (MMGEN_FAULTS_FRESH=1)."""

    def __init__(self, logs: Path, fresh: bool) -> None:
        self.logs, self.fresh = logs, fresh
        self.mode = "fresh `python -m mmgen` processes" if fresh else "forked from a preloaded server (forkserver.py)"
        self._n = 0
        self._lock = threading.Lock()  # kill cycles run in threads; one request on the pipe at a time
        self._server: subprocess.Popen[str] | None = None
        self.env = {**os.environ, **CHILD_ENV}
        if not fresh:
            self._server = subprocess.Popen([sys.executable, str(HERE / "forkserver.py")], cwd=ROOT, env=self.env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def _request(self, **req: Any) -> dict[str, Any]:
        assert self._server is not None and self._server.stdin and self._server.stdout
        with self._lock:
            self._server.stdin.write(json.dumps(req) + "\n")
            self._server.stdin.flush()
            line = self._server.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def start(self, argv: list[str], cwd: Path, tag: str, script: Path | None = None,
              kill_at: str | None = None, env: dict[str, str] | None = None) -> Proc:  # fmt: skip
        """Start `mmgen ARGV` (or a Python script) in `cwd`, its output in the log folder; `kill_at`: a kill
        point (forkserver.py) where the process SIGKILLs itself; `env`: more environment for this one."""
        env = {**(env or {}), **({KILL_AT: kill_at} if kill_at else {})}
        with self._lock:
            self._n += 1
            n = self._n
        out, err = self.logs / f"{n:04d}-{tag}.out", self.logs / f"{n:04d}-{tag}.err"
        if self._server is None:
            head = [sys.executable, str(script)] if script else [sys.executable, "-m", "mmgen"]
            if kill_at:  # the same `mmgen.cli.main`, with the kill point installed first
                head = [sys.executable, str(HERE / "forkserver.py"), "--exec"]
            with open(out, "wb") as fo, open(err, "wb") as fe:
                handle = subprocess.Popen([*head, *argv], cwd=cwd, env={**self.env, **env}, stdout=fo, stderr=fe,
                                          stdin=subprocess.DEVNULL)  # fmt: skip
            return Proc(self, handle.pid, out, err, handle)
        reply = self._request(op="spawn", argv=argv, cwd=str(cwd), stdout=str(out), stderr=str(err), env=env,
                              script=str(script) if script else None)  # fmt: skip
        return Proc(self, int(reply["pid"]), out, err)

    def _poll(self, proc: Proc) -> int | None:
        if proc.handle is not None:
            return proc.handle.poll()
        reply = self._request(op="wait", pid=proc.pid, block=False)
        return reply["rc"] if reply["done"] else None

    def run(self, argv: list[str], cwd: Path, tag: str, timeout: float = RUN_TIMEOUT_S,
            env: dict[str, str] | None = None) -> tuple[Proc, float]:  # fmt: skip
        """Run a command to its end; returns it and its wall time."""
        proc = self.start(argv, cwd, tag, env=env)
        rc = proc.wait(timeout)
        return proc, time.monotonic() - proc.started if rc is not None else 0.0

    def close(self) -> None:
        if self._server is not None:
            assert self._server.stdin is not None
            self._server.stdin.close()  # the server ends when its stdin does
            self._server.wait(timeout=30)
