"""tunewire.charts: the history a job's events make, the sparkline, and the PNG drawn with real matplotlib."""

from __future__ import annotations

import struct
import sys
from datetime import UTC, datetime

import pytest

from tunewire.charts import BLOCKS, History, MissingPlotting, plot, sparkline
from tunewire.types import CheckpointSaved, EvalResult, JobEvent, TrainLog

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _event(seq: int, data) -> JobEvent:
    return JobEvent(job_id="job-1", seq=seq, time=NOW, data=data)


def _history() -> History:
    h = History("job-1")
    events = [
        TrainLog(step=2, max_steps=6, epoch=0.3, progress=0.3, loss=1.2),
        TrainLog(step=4, max_steps=6, epoch=0.6, progress=0.6, loss=float("nan")),  # skipped, not drawn
        EvalResult(step=4, epoch=0.6, metrics={"loss": 0.9, "accuracy": 0.5, "runtime": 1.0, "cm_0_1": 3.0}),
        CheckpointSaved(step=4, name="checkpoint-4"),
        TrainLog(step=6, max_steps=6, epoch=1.0, progress=1.0, loss=0.7),
        EvalResult(step=6, epoch=1.0, metrics={"loss": 0.8, "accuracy": 0.75}),
    ]
    for seq, data in enumerate(events, 1):
        h.add(_event(seq, data))
    return h


def test_history_keeps_losses_and_quality_metrics_against_steps():
    h = _history()
    assert h.series["train/loss"] == [(2, 1.2), (6, 0.7)]
    assert h.series["eval/loss"] == [(4, 0.9), (6, 0.8)]
    assert h.series["eval/accuracy"] == [(4, 0.5), (6, 0.75)]
    assert set(h.series) == {"train/loss", "eval/loss", "eval/accuracy"}  # no runtime, no confusion counts


def test_sparkline_spans_lowest_to_highest_of_the_last_values():
    assert sparkline([]) == ""
    assert sparkline([3.0, 2.0, 1.0]) == BLOCKS[-1] + BLOCKS[len(BLOCKS) // 2] + BLOCKS[0]
    assert sparkline([5.0] * 4) == BLOCKS[len(BLOCKS) // 2] * 4
    line = sparkline([float(i) for i in range(100)], width=10)
    assert len(line) == 10 and line[0] == BLOCKS[0] and line[-1] == BLOCKS[-1]
    assert sparkline([1.0, float("inf"), 2.0]) == BLOCKS[0] + BLOCKS[-1]


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_plot_draws_a_png_with_two_panels(tmp_path):
    out = plot(_history(), tmp_path / "chart.png")
    width, height = _png_size(out)
    one_panel = plot(_history(), tmp_path / "loss.png", metrics=["nothing-such"])
    assert width == _png_size(one_panel)[0] and height > _png_size(one_panel)[1]


def test_plot_of_a_job_with_nothing_logged_says_so(tmp_path):
    with pytest.raises(ValueError, match="no loss or eval metrics"):
        plot(History("job-2"), tmp_path / "x.png")


def test_without_matplotlib_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to import
    with pytest.raises(MissingPlotting, match=r'pip install "tunewire\[plot\]"'):
        plot(_history(), tmp_path / "chart.png")
