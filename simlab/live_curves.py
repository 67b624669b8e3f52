"""Live training curves in a notebook: a running pretraining's loss and monitor curves redrawn in one
output as its records arrive, under a status line that says what the run is doing; headless (under
``simlab notebook`` / papermill) each status also prints as a plain line.

Figures are rendered with Agg to PNG bytes (no ipympl needed); the view-geometry explorer
(:mod:`simlab.widgets`) renders its figures the same way, with :func:`_png`.
"""

from __future__ import annotations

import io
import os
from typing import Optional

from . import viz

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


class LiveCurves:
    """Loss and monitor curves of a running pretraining, redrawn in one notebook output as records
    arrive (pass the instance as ``pretrain(..., on_metrics=curves, log=curves.log)``); at most one
    redraw per ``every_s`` seconds (none while run headless), and a last one from :meth:`close`. A
    status line above the figure says what the run is doing (preparing data, the step reached,
    images/s) until the first record and between redraws, so a long wait is never silent."""

    def __init__(self, every_s: float = 5.0, keys=("loss", "pos", "neg", "knn", "target_var", "encoder_var",
                                                   "encoder_rankme", "images_per_s"), total: Optional[int] = None):
        import time

        from IPython.display import display
        self.records: list[dict] = []
        self.every_s, self.keys, self.total, self._last = every_s, keys, total, 0.0
        self._start = time.monotonic()
        self.echo = bool(os.environ.get("SIMLAB_HEADLESS"))  # set by simlab.notebooks.run_notebook
        self.status = display({"text/plain": "preparing the data and the model; the first curves come after "
                                             "the first log interval"}, raw=True, display_id=True)
        self.handle = display({"text/plain": ""}, raw=True, display_id=True)

    def log(self, message: str) -> None:
        """A message of the run (``pretrain(..., log=curves.log)``), shown on the status line."""
        self._say(message)

    def _say(self, line: str) -> None:
        self.status.update({"text/plain": line}, raw=True)
        if self.echo:  # run headless (simlab notebook, papermill): also a plain line for the log and terminal
            print(line, flush=True)

    def __call__(self, record: dict) -> None:
        import time
        self.records.append(record)
        elapsed = time.monotonic() - self._start
        of = f"/{self.total}" if self.total else ""
        knn = f", k-NN {record['knn']:.3f}" if "knn" in record else ""
        self._say(f"step {record['step']}{of}, loss {record['loss']:.4f}{knn}, "
                  f"{record.get('images_per_s', 0):.0f} images/s, {elapsed:.0f} s")
        # run headless, nobody watches the figure until the notebook is saved, and only the last redraw
        # (close) is kept in it: each skipped redraw saves about half a second of training time
        if not self.echo and time.monotonic() - self._last >= self.every_s:
            self.draw()

    def draw(self):
        import time

        from IPython.display import Image
        if not self.records:
            return None
        fig = viz.plot_metrics(self.records, keys=self.keys)
        png = _png(fig)
        viz._pyplot().close(fig)
        self.handle.update(Image(png))
        self._last = time.monotonic()
        return png

    def close(self) -> None:
        """The final redraw, with every record."""
        self.draw()
