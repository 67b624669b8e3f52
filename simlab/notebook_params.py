"""What each notebook takes: its declared parameters (kind, range, help), validated with a message
naming the parameter, and the values of its ``parameters`` cell read without running anything.

Each notebook in ``notebooks/`` has one cell tagged ``parameters`` (literals only) and, right after
it, a cell calling :func:`simlab.notebooks.check_parameters`. Papermill only warns about a name the
notebook does not declare and injects any value it is given; :func:`validate` makes an unknown
name, a wrong type, a NaN or an out-of-range value fail at once, before any heavy cell runs (in the
kernel) or before a kernel even starts (``simlab notebook``).
"""

from __future__ import annotations

import ast
import difflib
import math
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional

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
    from .finetune_recipe import FINETUNE_PRESETS
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
    from .finetune_recipe import finetune_config
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
