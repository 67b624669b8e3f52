"""Shared test settings: few threads, deterministic algorithms, and the data-availability rule."""

import os

import pytest
import torch

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)


def require_data(available: bool, how: str) -> None:
    """Skip when test data is missing, except under CI=true, where that is a failure."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the test data is missing: {how}")
    pytest.skip(f"test data missing: {how}")
