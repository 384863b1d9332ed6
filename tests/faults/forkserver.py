"""A fork server for the fault-injection tests: `python forkserver.py` imports mmgen's heavy
dependencies once, then forks one child per request, and each child runs the real `mmgen`
command line (`mmgen.cli.main`, what `python -m mmgen` runs) with the given argv, cwd, env
and output files.

Why: on 2 CPU cores a fresh `python -m mmgen` spends ~7 s importing torch and open_clip before
it does any work, so a kill at a random moment would mostly land in the imports and a few kills
per command would take minutes. A forked child is still a real, separate OS process: it opens
its own SQLite connections, appends and fsyncs its own vector files, takes its own flock, and is
killed with a real SIGKILL by the test. Only the import work is shared (nothing in mmgen changes
global state at import time, and the parent runs no torch op before forking, so no thread pool
is inherited). `MMGEN_FAULTS_FRESH=1` makes the harness use fresh `python -m mmgen` processes
instead (same tests, slower).

A kill point (`MMGEN_FAULTS_KILL_AT=after:mmgen.index.folder:IndexFolder.create:1` in the child's
environment; `before:` kills before the call; the count is which call) makes the child SIGKILL
itself at that exact place in the code: the windows a random delay rarely hits (between a file
and the SQL commit that refers to it) are hit every time. `python forkserver.py --exec ARGV...`
runs one command that way in a fresh interpreter.

Protocol, one JSON object per line on stdin, one reply per line on stdout:
  {"op": "spawn", "argv": [...], "cwd": DIR, "env": {...}, "stdout": PATH, "stderr": PATH}
      -> {"pid": PID}                      (the child runs `mmgen ARGV`, or a script: "script": PATH)
  {"op": "wait", "pid": PID, "block": true|false} -> {"done": bool, "rc": int|null}
  {"op": "quit"} -> exits
"""

from __future__ import annotations

import json
import os
import signal
import sys


def preload() -> None:
    """Import what every mmgen command imports, without running any of it."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import faiss  # noqa: F401
    import open_clip  # noqa: F401
    import PIL.Image  # noqa: F401
    import sqlalchemy  # noqa: F401
    import torch  # noqa: F401
    from alembic import command  # noqa: F401
    from alembic.runtime import migration  # noqa: F401

    import mmgen.catalog
    import mmgen.check
    import mmgen.cli
    import mmgen.data.sources
    import mmgen.encoders.openclip
    import mmgen.hashing.model
    import mmgen.indexer
    import mmgen.search
    import mmgen.store.db
    import mmgen.train.encoder
    import mmgen.train.hasher  # noqa: F401


KILL_AT = "MMGEN_FAULTS_KILL_AT"


def install_kill_point(spec: str) -> None:
    """Wrap the named function so that the process SIGKILLs itself before or after its n-th call."""
    import functools
    import importlib

    when, module_name, path, nth = spec.split(":")
    if when not in ("before", "after"):
        raise ValueError(f"{KILL_AT}: before or after, not {when!r}")
    owner = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
    is_static = isinstance(original, (staticmethod, classmethod))
    function = original.__func__ if is_static else original
    calls = {"n": 0}

    def die() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if when == "before" and calls["n"] == int(nth):
            die()
        result = function(*args, **kwargs)
        if when == "after" and calls["n"] == int(nth):
            die()
        return result

    setattr(owner, attr, type(original)(wrapper) if is_static else wrapper)


def run_mmgen(argv: list[str]) -> None:
    """`mmgen ARGV`, with the kill point of the environment installed."""
    if os.environ.get(KILL_AT):
        install_kill_point(os.environ[KILL_AT])
    sys.argv = ["mmgen", *argv]
    from mmgen.cli import main

    main()


def child(req: dict) -> None:
    """Become the requested command (never returns)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.chdir(req["cwd"])
        os.environ.update(req.get("env", {}))
        if req.get("script"):
            import runpy

            sys.argv = [req["script"], *req["argv"]]
            runpy.run_path(req["script"], run_name="__main__")
        else:
            run_mmgen(req["argv"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child reports any crash as its exit status, like an interpreter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    """Serve requests until stdin closes."""
    preload()
    channel = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        if req["op"] == "spawn":
            channel.flush()
            pid = os.fork()
            if pid == 0:
                child(req)
            reply = {"pid": pid}
        elif req["op"] == "wait":
            pid, status = os.waitpid(int(req["pid"]), 0 if req.get("block") else os.WNOHANG)
            reply = {"done": pid != 0, "rc": os.waitstatus_to_exitcode(status) if pid else None}
        else:
            reply = {"error": f"unknown op {req['op']!r}"}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--exec"]:
        run_mmgen(sys.argv[2:])
    else:
        main()
