"""tunewire_server.datasets.fast_report: the pyarrow path gives the very report of the Python readers
(report.build_report) on every file it takes, and gives up (FastPathUnavailable) on every file where
pyarrow would read otherwise; the arrival check then gives the slow path's report or problem."""

from __future__ import annotations

import io
import json
import random

import pytest

from tunewire_server.datasets.arrival import check_growing
from tunewire_server.datasets.fast_report import FastPathUnavailable, fast_jsonl_report
from tunewire_server.datasets.report import DatasetProblem, Report, build_report


def jsonl(rows, end: bytes = b"\n") -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + end for r in rows)


def slow(tmp_path, data: bytes, label: str = "") -> Report | str:
    path = tmp_path / "slow.jsonl"
    path.write_bytes(data)
    try:
        return build_report(path, "jsonl", label)
    except DatasetProblem as exc:
        return f"DatasetProblem: {exc}"


def fast(data: bytes, label: str = "", block: int = 1 << 20) -> Report:
    return fast_jsonl_report(io.BufferedReader(io.BytesIO(data)), label, block)


def arrival(tmp_path, data: bytes, label: str = "") -> Report | str:
    """The arrival check's answer (run in this process), as `slow` words it."""
    path = tmp_path / "growing.jsonl"
    path.write_bytes(data)
    answer = check_growing(path, "jsonl", label, io.StringIO(f"{len(data)}\nseal\n"))
    return Report.from_json(answer["report"]) if "report" in answer else f"DatasetProblem: {answer['problem']}"


TAKEN = {
    "types": [{"i": 1, "f": 1.5, "b": True, "s": "x", "n": None, "l": [1, 2], "o": {"k": "v"}},
              {"i": -7, "f": 2, "b": False, "s": "y", "n": None, "l": [], "o": {}}],
    "int-then-float": [{"a": 1}, {"a": 2.5}, {"a": 3}],
    "missing-and-null": [{"a": 1, "b": "x"}, {"b": None}, {"c": [None]}, {"a": None, "c": [1]}],
    "nested": [{"o": {"x": {"y": [{"z": "w"}, {"v": 1}]}}}, {"o": {"q": [[1, 2], []]}}, {"o": None}],
    "dates": [{"d": "2020-01-01", "t": "2021-02-03T04:05:06"}, {"d": "2020-01-02", "t": None}],
    "unicode": [{"text": "caf\u00e9 \u20ac \U0001F600", "label": "\u00e9t\u00e9"}, {"text": "\u65e5\u672c", "label": "x"}],
    "empty-rows": [{}, {"a": None}, {"a": "  \t"}, {"a": "\u3000\u2028"}, {"a": "\x1c"}, {"a": "ok"},
                   {"n": 0}, {"a": ""}, {"l": []}, {"o": {}}, {"a": " ", "b": None}, {"a": " ", "b": False},
                   {"a": " ", "s": "\u00a0", "n": None}],
    "labels-int": [{"label": i % 3, "t": "x"} for i in range(20)] + [{"t": "no label"}, {"label": None}],
    "labels-bool": [{"label": i % 2 == 0} for i in range(9)],
    "labels-long": [{"label": "y" * 300 + str(i % 2)} for i in range(6)],
    "label-absent": [{"text": "a"}, {"text": "b"}],
}


@pytest.mark.parametrize("case", sorted(TAKEN))
@pytest.mark.parametrize("label", ["", "label"])
def test_files_the_fast_path_takes_get_the_slow_paths_report(tmp_path, case, label):
    data = jsonl(TAKEN[case])
    expected = slow(tmp_path, data, label)
    assert isinstance(expected, Report)
    assert fast(data, label) == expected
    assert arrival(tmp_path, data, label) == expected


@pytest.mark.parametrize("data", [
    b'{"a": 1}\n\n   \n{"a": 2}\n\t\n',  # blank lines: rows are numbered past them
    b'{"a": 1}\r\n\r\n{"a": 2, "b": " "}\r\n{"b": " "}\r\n',  # CRLF
    b'   {"a": 1}\n{"a": 2}',  # an indented row; a last line without its newline
    b'{"a": "\\ud83d\\ude00", "b": "\\u00e9"}\n{"\\u00e9": 1}\n',  # escapes, a surrogate pair
])
def test_line_forms_the_fast_path_takes(tmp_path, data):
    expected = slow(tmp_path, data, "a")
    assert fast(data, "a") == expected


def test_many_blocks_and_lines_across_reads_give_the_same_report(tmp_path):
    rng = random.Random(3)
    rows = [{"id": i, "text": " ".join(rng.choice(["a", "bb", "\u00e9t\u00e9", " "]) for _ in range(rng.randrange(0, 90))),
             "label": rng.choice(["pos", "neg", None]), **({"extra": rng.random()} if i % 7 == 0 else {})}
            for i in range(3000)]
    data = jsonl(rows)
    expected = slow(tmp_path, data, "label")
    for block in (64, 1000, 4096, 1 << 16):
        assert fast(data, "label", block) == expected, block


TEXTS = [" ", "", "a b", "\u00e9", "\u3000", "tab\there", "2020-05-06", "\U0001F600 ok"]
KINDS = {  # one kind of value a column: pyarrow refuses a column whose kind changes
    "text": lambda rng: rng.choice(TEXTS),
    "int": lambda rng: rng.randrange(-10**6, 10**6),
    "int-or-float": lambda rng: rng.choice([1, -3, 0.5, 2.25]),
    "bool": lambda rng: rng.random() < 0.5,
    "ints": lambda rng: [rng.randrange(9) for _ in range(rng.randrange(3))],
    "texts": lambda rng: [rng.choice(TEXTS) for _ in range(rng.randrange(3))],
    "object": lambda rng: {k: rng.choice(TEXTS) for k in rng.sample("xyz", rng.randrange(3))},
    "nested": lambda rng: {"l": [{"v": rng.randrange(5)} for _ in range(rng.randrange(3))]},
}


@pytest.mark.parametrize("seed", range(12))
def test_random_files_give_the_slow_paths_report(tmp_path, seed):
    """A random kind of value per column, random nulls, missing keys, empty rows, nested values, blocks
    of random sizes."""
    rng = random.Random(seed)
    kinds = {name: rng.choice(sorted(KINDS)) for name in "abcdef"}
    rows = [{name: None if rng.random() < 0.15 else KINDS[kind](rng)
             for name, kind in kinds.items() if rng.random() < 0.8} for _ in range(rng.randrange(1, 300))]
    data = jsonl(rows)
    label = rng.choice(["", "a", "b", "zz"])
    expected = slow(tmp_path, data, label)
    if any(kinds.get(label) == k for k in ("int-or-float", "ints", "texts", "object", "nested")):
        with pytest.raises(FastPathUnavailable):  # label values the fast path does not count
            fast(data, label)
    else:
        assert fast(data, label, rng.choice([256, 4096, 1 << 20])) == expected
    assert arrival(tmp_path, data, label) == expected


FALLBACK = {
    "two-objects-on-a-line": b'{"a": 1} {"a": 2}\n{"a": 3}\n',
    "two-objects-and-a-blank-line": b'{"a": 1}{"a": 2}\n\n{"a": 3}\n',
    "nan": b'{"a": 1.5}\n{"a": NaN}\n',
    "infinity-nested": b'{"a": [1.5, Infinity]}\n',
    "inf": b'{"a": [Inf]}\n',
    "big-integer": b'{"a": 1}\n{"a": 18446744073709551616}\n',
    "int64-overflow": b'{"a": 9223372036854775808}\n',
    "bom": b'\xef\xbb\xbf{"a": 1}\n',
    "lone-cr": b'{"a": 1}\r{"a": 2}\n',
    "not-utf8": b'{"a": "caf\xe9"}\n',
    "lone-surrogate": b'{"a": "\\udc80"}\n',
    "duplicate-key": b'{"a": 1, "a": "x"}\n',
    "mixed-column": b'{"a": 1}\n{"a": "x"}\n',
    "deep": b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}\n",
    "too-deep": b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}\n",
    "not-an-object": b'{"a": 1}\n[1, 2]\n',
    "invalid": b'{"a": 1}\n{"a": \n',
    "label-floats": b'{"label": 1.0}\n{"label": 2}\n',
    "label-dates": b'{"label": "2020-01-01"}\n',
    "label-nested": b'{"label": [1]}\n',
    "many-columns": jsonl([{f"c{i}": i for i in range(300)}]),
    "form-feed-line": b'{"a": 1}\n\x0c\n{"a": 2}\n',
    "no-rows": b"\n \n",
}


@pytest.mark.parametrize("case", sorted(FALLBACK))
def test_files_pyarrow_reads_otherwise_fall_back_to_the_slow_report(tmp_path, case):
    data = FALLBACK[case]
    with pytest.raises(FastPathUnavailable):
        fast(data, "label")
    assert arrival(tmp_path, data, "label") == slow(tmp_path, data, "label")


def test_too_many_label_values_fall_back(tmp_path, monkeypatch):
    from tunewire_server.datasets import fast_report

    monkeypatch.setattr(fast_report, "MAX_LABELS", 3)
    data = jsonl([{"label": str(i)} for i in range(5)])
    with pytest.raises(FastPathUnavailable):
        fast(data, "label")


def test_empty_rows_past_the_listed_bound_are_all_counted_and_numbered_past_blank_lines(tmp_path):
    rows = [b'{"a": "x"}', b"", b'{"a": " "}', b"  ", b"{}", b'{"a": null, "b": null}'] * 40
    data = b"\n".join(rows) + b"\n"
    expected = slow(tmp_path, data, "a")
    assert isinstance(expected, Report) and expected.problem_row_count == 120 and len(expected.problem_rows) == 100
    for block in (100, 1 << 20):
        assert fast(data, "a", block) == expected
