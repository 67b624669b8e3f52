"""Stopping a run cleanly: SIGTERM and Ctrl-C honoured at step boundaries, and the fault-injection hook.

The handlers only set a flag (no collectives, no I/O, safe wherever a signal lands); the loop saves
the last finished step on rank 0 and stops with the shell's exit code for the signal. The test hook
``SIMLAB_FAULT`` injects faults at chosen steps (tests/test_reliability.py, tests/test_distributed.py).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional


class Terminated(SystemExit):
    """SIGTERM (or, as :class:`Interrupted`, SIGINT) arrived; the last finished step was saved (by
    rank 0) and the run stopped. The exit code is the shell's for that signal: 143, or 130 for SIGINT."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.step, self.signum = step, signum


class Interrupted(Terminated):
    """Ctrl-C (SIGINT): the last finished step was saved and the run stopped with exit code 130."""

    def __init__(self, step: int):
        super().__init__(step, signal.SIGINT)


FAULT_KINDS = ("raise", "nan", "inf", "grad_nan", "kill", "term", "int")


def fault_hook(step: int, rank: int) -> Optional[str]:
    """Test hook: ``SIMLAB_FAULT=RANK:STEP:KIND`` injects a fault on one rank at one step (first attempt
    only, so a run restarted by ``torchrun --max-restarts`` finishes). KIND: raise | nan | inf (in the loss)
    | grad_nan (in one gradient, after backward) | kill (SIGKILL) | term (SIGTERM: the step finishes, is
    saved, and the run stops) | int (SIGINT, as Ctrl-C sends it: to the whole process group, data-loader
    workers included, when this process leads its group; else to this process alone)."""
    spec = os.environ.get("SIMLAB_FAULT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    r, s, kind = spec.split(":")
    if int(r) != rank or int(s) != step:
        return None
    if kind not in FAULT_KINDS:
        raise ValueError(f"SIMLAB_FAULT kind must be one of {FAULT_KINDS}, got {kind!r}")
    if kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank} at step {step}")
    if kind in ("kill", "term"):
        os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGTERM)
    if kind == "int":
        # a terminal's Ctrl-C reaches the foreground process group; a test that starts the run in a
        # session of its own gets the same, and never signals its own (pytest's) group
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)
    return kind


class StopOnSignal:
    """Turns SIGTERM and a first SIGINT (Ctrl-C) into a request honoured at the next step boundary
    (main thread only); a second SIGINT stops at once with KeyboardInterrupt.

    The handler itself only sets a flag: no collectives, no I/O, so it is safe
    wherever the signal lands. The loop then saves the state of the last
    *finished* (hence finite) step on rank 0 and stops: exit code 143 for
    SIGTERM, 130 for SIGINT (the shell's codes for them). A second Ctrl-C is for
    a user who does not want to wait for that step; a checkpoint write it cuts
    short leaves only a temporary file, which the next save replaces. A SIGINT
    that was ignored when the run started (a background job) stays ignored.
    """

    def __init__(self):
        self.requested = False
        self.signum: int = signal.SIGTERM
        self._previous: dict[int, object] = {}
        self._saved: Optional[tuple[int, bool]] = None  # (step, whether checkpoint_due had it saved)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:  # the second Ctrl-C: stop now, save nothing more
            self._restore()
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def checkpoint_due(self, done: int, total: int, every: int) -> bool:
        """Save after this step: every ``every`` steps, at the end, and when a stop was asked for."""
        due = done % every == 0 or done == total or self.requested
        self._saved = (done, due)
        return due

    def stop_if_requested(self, done: int, log: Callable[[str], None]) -> None:
        """After the save: stop with exit code 143 (SIGTERM) or 130 (SIGINT) if one arrived.

        On the rank that saves, only once this step was saved: a signal that lands between the save
        decision and here, when none was due, stops after the next step (which is then saved), so
        "saved step N" is always true. Ranks that do not save stop as soon as it arrived."""
        if not self.requested:
            return
        if self._saved is not None and self._saved[0] == done and not self._saved[1]:
            return
        if self.signum == signal.SIGINT:
            log(f"interrupted: saved step {done}; run the same command to resume")
            raise Interrupted(done)
        log(f"SIGTERM: saved step {done} and stopped; run the same command to resume")
        raise Terminated(done)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is closest
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False
