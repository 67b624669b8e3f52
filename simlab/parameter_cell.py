"""The validation cell of a notebook: :func:`check_parameters` checks the parameters a kernel holds,
and, from IPython's ``In`` history, that every name the parameters cell (or papermill's injected
cell) just assigned is one the notebook declares, so a typo fails with the closest declared name
instead of running on with the default.
"""

from __future__ import annotations

import ast
from typing import Iterable, Optional, Sequence

from .notebook_params import PARAMETERS, ParameterError, validate

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
