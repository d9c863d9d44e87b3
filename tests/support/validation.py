"""Settings for validation tests: a data dir with a model folder `tiny` (a config.json only: validation never
loads weights) and `train.jsonl` under the dataset root."""

from __future__ import annotations

import json
from pathlib import Path


def settings_with_data(data_dir: Path, rows: list[dict]):
    from tunewire_server.config import Settings

    s = Settings(data_dir=data_dir)
    model = s.model_root / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    s.dataset_root.mkdir(parents=True)
    (s.dataset_root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return s
