"""The notebooks as experiments: their parameters, validated, and a papermill runner.

Each notebook in ``notebooks/`` has one cell tagged ``parameters`` (literals
only) and, right after it, a cell calling :func:`check_parameters`. Papermill
only warns about a name the notebook does not declare and injects any value it
is given; :func:`check_parameters` makes an unknown name, a wrong type, a NaN
or an out-of-range value fail at once with a message naming the parameter,
before any heavy cell runs. :func:`run_notebook` (``simlab notebook``) checks
the same things before it even starts a kernel.

Papermill is imported only inside :func:`run_notebook`.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


class ParameterError(ValueError):
    """A notebook parameter that is unknown, of the wrong type or out of range.

    In IPython (JupyterLab, papermill) it shows as its one line: the reason is the whole story, and a
    traceback through simlab's validation code would only bury it.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for an exception's own rendering
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class Param(NamedTuple):
    kind: str  # "int", "float", "str", "bool", "list[str]"; a trailing "?" allows None
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns what is wrong, or None
    help: str = ""


def at_least(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}"


def between(lo, hi):
    return lambda v: None if lo <= v <= hi else f"must be in [{lo}, {hi}]"


def one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(map(repr, choices))}"


def _finetune_preset(v):
    from .finetune import FINETUNE_PRESETS
    return None if v in FINETUNE_PRESETS else f"unknown preset; choose one of {', '.join(FINETUNE_PRESETS)}"


def _preset_name(v):
    from .presets import PRESETS
    return None if v in PRESETS else f"unknown preset; choose one of {', '.join(PRESETS)}"


_COMMON = {"run_dir": Param("str", help="folder for this notebook's figures and runs")}

PARAMETERS: dict[str, dict[str, Param]] = {
    "00_tour": {
        **_COMMON,
        "preset": Param("str", _preset_name, "model and data of the short runs"),
        "steps": Param("int", at_least(1), "SiM pretraining steps of the short run"),
        "baseline_steps": Param("int", at_least(0), "steps of the MAE and ID runs (0 skips them)"),
        "probe_train": Param("int", at_least(10), "labelled images the probes train on"),
        "probe_test": Param("int", at_least(10), "labelled test images"),
        "seed": Param("int", at_least(0), "pretraining seed"),
    },
    "01_view_geometry": {
        **_COMMON,
        "dataset": Param("str", help="source images"),
        "data_root": Param("str?", help="folder of the dataset, if it needs one"),
        "index": Param("int", at_least(0), "which image"),
        "source_size": Param("int", at_least(8), "side of the source image (shapes renders at it)"),
        "view_size": Param("int", at_least(8), "side of each view"),
        "patch_size": Param("int", at_least(1), "patch side; view_size / patch_size patches per row"),
        "mask_ratio": Param("float", between(0.0, 0.95), "share of view-1 patches masked"),
        "stats_batch": Param("int", at_least(16), "view pairs in the histograms"),
        "seed": Param("int", at_least(0), "augmentation seed"),
    },
    "02_pretrain": {
        **_COMMON,
        "preset": Param("str", _preset_name, "starting configuration"),
        "dataset": Param("str?", help="override the preset's dataset"),
        "data_root": Param("str?", help="folder of the dataset"),
        "steps": Param("int?", at_least(1), "optimizer steps (None: the preset's length)"),
        "epochs": Param("float?", lambda v: None if v > 0 else "must be > 0", "epochs instead of steps"),
        "seed": Param("int", at_least(0), "run seed"),
        "overrides": Param("list[str]", help="config overrides 'key=value', as simlab pretrain --set"),
    },
    "03_dense_features": {
        **_COMMON,
        "checkpoint": Param("str?", help="a checkpoint or run folder (None: the demo checkpoint shipped in the repo)"),
        "dataset": Param("str?", help="images to look at (None: the checkpoint's dataset)"),
        "data_root": Param("str?", help="folder of that dataset"),
        "indices": Param("list[int]", help="image indices of the test split"),
        "pairs": Param("int", at_least(16), "held-out view pairs the decoder and its floors are scored on"),
        "seed": Param("int", at_least(0), "views and masks seed"),
    },
    "04_probes": {
        **_COMMON,
        "checkpoints": Param("list[str]", help="checkpoints or run folders (empty: the shipped demo checkpoint)"),
        "random_init": Param("bool", help="add a random-init encoder of the first checkpoint's architecture"),
        "raw_pixels": Param("bool", help="add raw pixels as a baseline (minutes at thousands of images)"),
        "dataset": Param("str?", help="labelled dataset (None: each checkpoint's own)"),
        "data_root": Param("str?", help="folder of that dataset"),
        "train_size": Param("int", at_least(10), "labelled train images"),
        "test_size": Param("int", at_least(10), "test images"),
        "claim_dir": Param("str?", help="a 'python -m simlab.bench claim' folder whose table to show"),
    },
    "05_finetune": {
        **_COMMON,
        "checkpoint": Param("str?", help="checkpoint or run folder (None: the shipped demo checkpoint)"),
        "preset": Param("str", _finetune_preset, "fine-tuning recipe: paper, demo or tiny"),
        "dataset": Param("str?", help="labelled dataset (None: the checkpoint's pretraining dataset)"),
        "data_root": Param("str?", help="folder of that dataset"),
        "steps": Param("int?", at_least(1), "optimizer steps (None: the preset's length)"),
        "random_init": Param("bool", help="also fine-tune a random-init encoder, the same way"),
        "overrides": Param("list[str]", help="fine-tuning overrides 'key=value', as simlab finetune --set"),
    },
    "06_runs": {
        **_COMMON,
        "paths": Param("list[str]", help="run folders, or folders of them, to list and compare"),
        "sweep_dir": Param("str?", help="a simlab sweep folder whose table and plot to show (None: none)"),
        "keys": Param("list[str]", help="metrics drawn in the comparison figure"),
    },
}


def _type_error(kind: str, value) -> Optional[str]:
    base = kind.rstrip("?")
    if value is None:
        return None if kind.endswith("?") else "must not be None"
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return f"must be finite, got {value}"
    elif base == "str":
        ok = isinstance(value, str)
    elif base.startswith("list["):
        item = base[5:-1]
        return None if isinstance(value, (list, tuple)) and all(_type_error(item, v) is None for v in value) \
            else f"must be a list of {item}, got {value!r}"
    else:
        raise ValueError(f"unknown parameter kind {kind!r}")
    return None if ok else f"must be {base}{' or None' if kind.endswith('?') else ''}, got {value!r}"


def unknown_parameter(notebook: str, name: str) -> ParameterError:
    """The error for a name ``notebook`` does not declare, with the closest declared names."""
    spec = PARAMETERS[notebook]
    close = difflib.get_close_matches(name, list(spec), n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return ParameterError(f"unknown parameter {name!r}{hint}: {notebook} has no such parameter; "
                          f"it takes {', '.join(spec)}")


def validate(notebook: str, values: dict, injected: Iterable[str] = ()) -> dict:
    """The declared parameters of ``notebook`` taken from ``values``, checked; raises ParameterError
    naming the first bad one (including any name in ``injected`` the notebook does not declare)."""
    if notebook not in PARAMETERS:
        raise ParameterError(f"unknown notebook {notebook!r}; choose one of {', '.join(PARAMETERS)}")
    spec = PARAMETERS[notebook]
    for name in injected:
        if name not in spec:
            raise unknown_parameter(notebook, name)
    out = {}
    for name, p in spec.items():
        if name not in values:
            raise ParameterError(f"parameter {name!r}: missing")
        value = values[name]
        problem = _type_error(p.kind, value)
        if problem is None and value is not None and p.check is not None:
            problem = p.check(value)
        if problem:
            raise ParameterError(f"parameter {name!r}: {problem}")
        out[name] = value
    if notebook == "02_pretrain":
        pretrain_config(out)  # the config's own validation, with the parameter's name in its message
    if notebook == "05_finetune":
        finetune_config_of(out)
    return out


def finetune_config_of(params: dict, random_init: Optional[int] = None):
    """05_finetune's parameters as a validated FinetuneConfig (as ``simlab finetune`` builds it)."""
    from .config import ConfigError
    from .finetune import finetune_config
    try:
        return finetune_config(params["preset"], params["overrides"], dataset=params["dataset"],
                               data_root=params["data_root"], steps=params["steps"], random_init=random_init)
    except ConfigError as e:
        raise ParameterError(f"parameter 'overrides': {e}") from None


def pretrain_config(params: dict):
    """02_pretrain's parameters as a validated Config (the same precedence as ``simlab pretrain``)."""
    from .config import ConfigError
    from .presets import run_config
    named = {k: params[k] for k in ("dataset", "data_root", "epochs", "steps", "seed") if params[k] is not None}
    try:
        return run_config(params["preset"], params["overrides"], **named)
    except ConfigError as e:
        field = str(e).split(":")[0]  # the config names the field first
        owner = field if field in named and not any(o.split("=")[0].split(".")[-1] == field
                                                    for o in params["overrides"]) else "overrides"
        raise ParameterError(f"parameter {owner!r}: {e}") from None


def _is_injected(source: str) -> bool:
    return source.lstrip().startswith("# Parameters")


def assigned_names(source: str) -> Optional[list[str]]:
    """The names a cell assigns at top level, in order; None when it does more than assign (or does not
    parse), so it cannot be a parameters cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            names += [t.id for t in node.targets]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        else:
            return None
    return names


def injected_names(history: Iterable[str]) -> list[str]:
    """Names assigned by papermill's injected cell (its source starts with '# Parameters'), the newest one."""
    for source in reversed(list(history)):
        if _is_injected(source):
            return assigned_names(source) or []
    return []


def parameter_cell_names(notebook: str, history: Sequence[str]) -> list[str]:
    """The names assigned by the cells that set ``notebook``'s parameters just now, read from IPython's
    ``In`` history: the cells run right before the validation cell (the last entry, when it calls
    ``check_parameters``), papermill's injected cell and the parameters cell itself.

    A cell counts only when it does nothing but assign, and assigns at least one declared parameter
    (or is papermill's): a helper cell run just before, ``x = 5`` say, is not a parameters cell."""
    spec = PARAMETERS[notebook]
    entries = list(history)
    if entries and "check_parameters" in entries[-1]:
        entries = entries[:-1]  # the running cell
    found: list[str] = []
    for source in reversed(entries[-2:]):  # at most papermill's cell and the parameters cell
        names = assigned_names(source)
        if not source.strip() or names is None or not (_is_injected(source) or set(names) & set(spec)):
            break
        found = names + found
        if not _is_injected(source):
            break  # the parameters cell comes first; what ran before it is not ours
    return found


def check_parameters(notebook: str, namespace: dict) -> dict:
    """Called by each notebook's second code cell with ``globals()``: the validated parameters.

    In IPython it also reads the cell history (``In``): every name assigned by the parameters cell just
    run, as edited in JupyterLab (``mask_ratoi = 0.6``), or by papermill's injected cell, must be one the
    notebook declares, so a typo fails here with the closest declared name instead of running on with
    the default."""
    if notebook not in PARAMETERS:
        raise ParameterError(f"unknown notebook {notebook!r}; choose one of {', '.join(PARAMETERS)}")
    history = namespace.get("In", [])
    return validate(notebook, namespace, parameter_cell_names(notebook, history))


def parse_value(text: str):
    """A ``-p key value`` value: a Python literal where it parses as one, 'true'/'false' as bools,
    else the string itself (so paths need no quotes)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_path(name: str) -> Path:
    name = name.removesuffix(".ipynb")
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if name not in PARAMETERS or not path.exists():
        raise ParameterError(f"unknown notebook {name!r}; choose one of {', '.join(PARAMETERS)}")
    return path


def defaults(name: str) -> dict:
    """The values of a notebook's ``parameters`` cell (literals, read without running anything)."""
    import json
    nb = json.loads(notebook_path(name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body}


def _tracked_kernel_manager():
    """jupyter_client's kernel manager, remembering the kernels it starts (so Ctrl-C can reach them)."""
    from jupyter_client import AsyncKernelManager

    class TrackedKernelManager(AsyncKernelManager):
        started: list = []

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            TrackedKernelManager.started.append(self)

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
    terminal; a pretraining cell prints one line per log interval there (no progress-bar redraws).
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
    engine["kernel_manager_class"] = _tracked_kernel_manager()
    from nbclient.exceptions import DeadKernelError
    log_path = run_dir / f"{name}.log"
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
