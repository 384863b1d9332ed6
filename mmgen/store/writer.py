"""The record writer: searches recorded after they were answered, in one thread (`mmgen serve`'s own, and
one per process shared by every `Searcher` that records in the background)."""

from __future__ import annotations

import threading
from typing import Any


class RecordWriter:
    """One thread that records searches after they were answered, in order; `close()` drains what is queued.

    A record is lost only if the process is killed with records still queued (at most the requests in
    flight); a failed write is logged and the others go on."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mmgen-record-writer", daemon=True)
        self._thread.start()
        self.written = 0
        self.failed = 0

    def submit(self, fn: Any, *args: Any) -> None:
        self._queue.put((fn, args))

    def _run(self) -> None:
        import logging

        while True:
            job = self._queue.get()
            if job is None:  # close(): marked done, so a later flush() does not wait for it
                self._queue.task_done()
                return
            fn, args = job
            try:
                fn(*args)
                self.written += 1
            except Exception:  # noqa: BLE001 - one bad record must not stop the others
                self.failed += 1
                logging.getLogger(__name__).exception("recording a search failed")
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every submitted record is written."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)


_WRITER: tuple[int, RecordWriter] | None = None  # (pid, the process's record writer)
_WRITER_LOCK = threading.Lock()


def shared_writer() -> RecordWriter:
    """The one record-writer thread of this process, shared by every `Searcher` that records in the
    background (so opening many Searchers starts no more threads), flushed at the interpreter's exit. A
    forked child, which inherits the object but not the thread, starts its own."""
    global _WRITER
    import os

    with _WRITER_LOCK:
        if _WRITER is None or _WRITER[0] != os.getpid():
            import atexit

            _WRITER = (os.getpid(), RecordWriter())
            atexit.register(_WRITER[1].flush)  # no record lost at a normal exit
        return _WRITER[1]
