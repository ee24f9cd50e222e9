"""How a signal stops a run: `StopSignal` is set by the handler; the engine stops starting
work, and a request it is sending on the main thread is interrupted at once."""

from __future__ import annotations

import threading

from sagactl.errors import Interrupted

__all__ = ["StopSignal"]


class StopSignal(threading.Event):
    """Set when the run must stop, with the exit code to stop with (130 for SIGINT, 143 for
    SIGTERM). While `interruptible` — the engine is sending a request on the main thread —
    `request()` raises `Interrupted` right there, in the signal handler's frame, so the request
    is abandoned (and recorded as in doubt) instead of awaited."""

    def __init__(self) -> None:
        super().__init__()
        self.exit_code = 130
        self.interruptible = False

    def request(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.set()
        if self.interruptible and threading.current_thread() is threading.main_thread():
            self.interruptible = False
            raise Interrupted("", exit_code)
