"""Metric modules for `evaluate.load`, shipped in the package so evaluation works offline.

`evaluate.load("accuracy")` fetches the module from the Hub; `evaluate.load(path_to_module_dir)`
reads it from disk. Each folder holds one module in evaluate's format.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> str:
    return str(METRICS_DIR / name / f"{name}.py")
