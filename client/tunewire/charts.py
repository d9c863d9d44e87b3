"""Loss charts: a job's training history, a terminal sparkline, and a PNG drawn with matplotlib.

`history()` replays a job's events (what the server has now: it does not wait for a running job to end) into
series keyed by name: "train/loss", "eval/loss", "eval/accuracy", ... each a list of (step, value). The CLI's
`watch` draws the recent train loss as a sparkline beside its progress bar; `tunewire plot` draws every series
against steps. matplotlib is an optional extra (`pip install "tunewire[plot]"`); nothing here imports it until a
chart is drawn, and the SDK never imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunewire.types import EvalResult, JobEvent, TrainLog

if TYPE_CHECKING:
    from tunewire.client import Client

__all__ = ["History", "MissingPlotting", "history", "plot", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"
# Eval numbers that are not model quality: left out of the charts.
_NOT_METRICS = frozenset({"runtime", "samples_per_second", "steps_per_second", "epoch"})


class MissingPlotting(RuntimeError):
    """matplotlib is not installed."""


@dataclass
class History:
    """A job's numbers against optimizer steps, in the order they were logged."""

    job_id: str
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def add(self, event: JobEvent) -> None:
        """Take one event; anything that is not a TrainLog or an EvalResult is ignored."""
        data = event.data
        if isinstance(data, TrainLog):
            if data.loss is not None:
                self._put("train/loss", data.step, data.loss)
        elif isinstance(data, EvalResult):
            for name, value in data.metrics.items():
                if name not in _NOT_METRICS and not name.startswith("cm_"):
                    self._put(f"eval/{name}", data.step, value)

    def _put(self, name: str, step: int, value: float) -> None:
        if math.isfinite(value):
            self.series.setdefault(name, []).append((step, value))

    def values(self, name: str) -> list[float]:
        return [v for _, v in self.series.get(name, [])]


def history(client: Client, job_id: str) -> History:
    """The job's events up to now (its last_seq when asked), replayed into a History."""
    last = client.get(job_id).last_seq
    result = History(job_id)
    if last == 0:
        return result
    for event in client.stream_metrics(job_id, reconnect=True):
        result.add(event)
        if event.seq >= last:
            break
    return result


def sparkline(values: Sequence[float], width: int = 24) -> str:
    """The last `width` values as block characters, lowest to highest of those shown; "" for none."""
    shown = [v for v in values if math.isfinite(v)][-width:]
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    if high == low:
        return BLOCKS[len(BLOCKS) // 2] * len(shown)
    scale = (len(BLOCKS) - 1) / (high - low)
    return "".join(BLOCKS[round((v - low) * scale)] for v in shown)


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise MissingPlotting('drawing charts needs matplotlib: pip install "tunewire[plot]"') from e
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot(data: History, path: str | Path, metrics: Iterable[str] | None = None) -> Path:
    """Draw train/eval loss (top) and the other eval metrics (bottom) against steps into an image file.

    `metrics` limits the bottom panel to those eval metric names (without "eval/"); the format follows the
    file's suffix (png, svg, pdf). Raises MissingPlotting without matplotlib, ValueError with nothing to draw.
    """
    losses = [n for n in ("train/loss", "eval/loss") if data.series.get(n)]
    wanted = set(metrics) if metrics is not None else None
    others = sorted(n for n in data.series if n.startswith("eval/") and n != "eval/loss"
                    and (wanted is None or n.removeprefix("eval/") in wanted))
    if not losses and not others:
        raise ValueError(f"job {data.job_id} has logged no loss or eval metrics yet")
    plt = _pyplot()
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), sharex=True, squeeze=False)
    for ax, names in zip(axes[:, 0], panels, strict=True):
        for name in names:
            steps, values = zip(*data.series[name], strict=True)
            ax.plot(steps, values, marker="o" if name.startswith("eval/") else None, markersize=3, label=name)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[0, 0].set_title(data.job_id)
    axes[-1, 0].set_xlabel("step")
    out = Path(path)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
