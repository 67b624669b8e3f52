"""The notebooks as experiments: a papermill runner, and the public place for their parameters.

:func:`run_notebook` (``simlab notebook``) checks a notebook's parameters before it even starts a
kernel (:mod:`simlab.notebook_params`), executes it with papermill, tees the cells' output to a log,
passes Ctrl-C on to the kernel and turns a dead kernel into :class:`KernelDied`. Inside a notebook,
:func:`check_parameters` (:mod:`simlab.parameter_cell`) validates them before any heavy cell runs.

Papermill is imported only inside :func:`run_notebook`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .notebook_params import (NOTEBOOK_DIR, PARAMETERS, Param, ParameterError, at_least, between, defaults,
                              finetune_config_of, notebook_path, one_of, parse_value, pretrain_config,
                              unknown_parameter, validate)
from .parameter_cell import assigned_names, check_parameters, injected_names, parameter_cell_names

# the public place for every notebook name (notebooks, tests, the CLI and benchmarks import them
# from here), those defined in the modules above included
__all__ = ["NOTEBOOK_DIR", "PARAMETERS", "Param", "ParameterError", "at_least", "between", "one_of", "defaults",
           "finetune_config_of", "pretrain_config", "notebook_path", "parse_value", "unknown_parameter", "validate",
           "assigned_names", "check_parameters", "injected_names", "parameter_cell_names", "HEADLESS_ENV",
           "KernelDied", "run_notebook"]

def _tracked_kernel_manager(process_log: Optional[Path] = None):
    """jupyter_client's kernel manager, remembering the kernels it starts (so Ctrl-C can reach them).

    With ``process_log``, the kernel *process's* own stdout and stderr (not the cells' output, which
    arrives as messages) are appended to that file instead of this terminal. That is where ipykernel
    logs, e.g. "KeyboardInterrupt caught in kernel." when jupyter_client's shutdown, which always
    sends the kernel SIGINT first, lands while a message handler is still running: harmless, and
    not a line a user could act on."""
    from jupyter_client import AsyncKernelManager

    class TrackedKernelManager(AsyncKernelManager):
        started: list = []

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            TrackedKernelManager.started.append(self)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if process_log is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            with open(process_log, "a") as sink:  # the kernel keeps its own copy of the descriptor
                return await super()._async_launch_kernel(kernel_cmd, **{**kw, "stdout": sink, "stderr": sink})

    return TrackedKernelManager


class _InterruptKernels:
    """The first SIGINT interrupts the kernels (jupyter_client starts each in a session of its own, so
    a terminal's Ctrl-C never reaches them); papermill then records the interrupted cell and stops.
    A second SIGINT raises KeyboardInterrupt here at once. Main thread only; otherwise a no-op."""

    def __init__(self, managers: list):
        self.managers, self.interrupted, self._previous = managers, False, None

    def __enter__(self) -> "_InterruptKernels":
        import signal
        import threading
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        import signal
        if self.interrupted:
            self._restore()
            raise KeyboardInterrupt
        self.interrupted = True
        for km in self.managers:  # a plain signal to each kernel's process group: safe in a handler
            provisioner = getattr(km, "provisioner", None)
            pgid = getattr(provisioner, "pgid", None)
            process = getattr(provisioner, "process", None)
            try:
                if pgid:
                    os.killpg(pgid, signal.SIGINT)
                elif process is not None:
                    os.kill(process.pid, signal.SIGINT)
            except OSError:  # already gone
                pass

    def _restore(self) -> None:
        import signal
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def __exit__(self, *exc) -> bool:
        self._restore()
        return False


HEADLESS_ENV = "SIMLAB_HEADLESS"  # set while simlab runs a notebook: progress goes to text lines too


class KernelDied(RuntimeError):
    """The notebook's kernel died (SIGKILL, out of memory); what ran is kept, a rerun resumes."""


class _Tee:
    """The kernel's stream output, line by line as it arrives: appended to ``RUN_DIR/NAME.log`` (for
    ``tail -f``) and, with ``echo``, printed to this terminal."""

    def __init__(self, path: Path, echo: bool):
        self.file, self.echo = open(path, "a"), echo

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        if self.echo:
            sys.stdout.write(text)
            sys.stdout.flush()
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def run_notebook(name: str, run_dir, params: Optional[dict] = None, kernel: str = "python3",
                 progress: bool = True, mark_complete: bool = True, echo: bool = False) -> Path:
    """Execute ``notebooks/NAME.ipynb`` into ``RUN_DIR/NAME.ipynb`` with papermill.

    What the cells print goes, as it comes, to ``RUN_DIR/NAME.log`` and, with ``echo``, to this
    terminal (the kernel process's own log lines go to ``RUN_DIR/NAME.log`` only); a pretraining
    cell prints one line per log interval there (no progress-bar redraws).
    A kernel that dies (SIGKILL, out of memory) raises :class:`KernelDied` with what to do: the
    notebook so far is kept, and rerunning resumes the training from its newest checkpoint.

    The parameters (the notebook's defaults, then ``params``, then ``run_dir``) are validated before a
    kernel starts. ``COMPLETE`` is written in ``run_dir`` only on success; a failing cell raises
    papermill's PapermillExecutionError, and the written notebook keeps the error cell.

    Ctrl-C interrupts the running cell, as JupyterLab's stop button does (a pretraining run in it saves
    its last finished step first), lets papermill write the cells run so far into
    ``RUN_DIR/NAME.ipynb``, and raises KeyboardInterrupt; a second Ctrl-C stops without waiting.

    The kernel talks to papermill over Unix sockets (IPC) in a private temporary folder rather than
    TCP on localhost: nothing else on the machine can connect to it, and ipykernel then has no reason
    to print its warning that TCP without encryption is open to eavesdropping."""
    import shutil
    import tempfile

    import papermill

    path = notebook_path(name)
    name = path.stem
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ParameterError(f"parameter 'run_dir': {run_dir} exists and is not a folder")
    given = dict(params or {})
    if "run_dir" in given:
        raise ParameterError("parameter 'run_dir': set by --out, not by -p")
    given["run_dir"] = str(run_dir)
    validate(name, {**defaults(name), **given}, injected=given)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "COMPLETE").unlink(missing_ok=True)
    out = run_dir / f"{name}.ipynb"
    engine: dict[str, Any] = {}
    sockets = None
    if os.name == "posix":
        from traitlets.config import Config
        # a short private path: a Unix socket's path must stay under ~100 bytes, and a runtime folder
        # under a deep home or temporary directory can be longer than that
        sockets = tempfile.mkdtemp(prefix="simlab-kernel-")
        engine["config"] = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "k")}})
    from nbclient.exceptions import DeadKernelError
    log_path = run_dir / f"{name}.log"
    engine["kernel_manager_class"] = _tracked_kernel_manager(process_log=log_path)
    stream = _Tee(log_path, echo)
    stream.write(f"=== {name} {time.strftime('%Y-%m-%d %H:%M:%S')} parameters {given}\n")
    headless = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it: live curves also print a line per record
    try:
        with _InterruptKernels(engine["kernel_manager_class"].started) as ctrl_c:
            try:
                papermill.execute_notebook(str(path), str(out), parameters=given, kernel_name=kernel,
                                           progress_bar=progress, cwd=None, stdout_file=stream,
                                           stderr_file=stream, **engine)
            except papermill.PapermillExecutionError:
                if ctrl_c.interrupted:  # the cell failed because of the interrupt we passed on
                    raise KeyboardInterrupt from None
                raise
            except DeadKernelError as e:
                stream.write(f"=== the kernel died: {e}\n")
                raise KernelDied(f"the notebook's kernel died (killed, or out of memory?); the cells run so "
                                 f"far are in {out} and its output in {log_path}; run the same command "
                                 f"again: training resumes from its newest checkpoint") from None
    finally:
        stream.close()
        if headless is None:
            os.environ.pop(HEADLESS_ENV, None)
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
    if mark_complete:
        (run_dir / "COMPLETE").write_text(f"{name}\n")
    return out
