"""tunewire_server.datasets.arrival: the report built by a child process while the file grows is the
one-shot report (report.build_report) of the same bytes, whatever the chunks; an abandoned check leaves no
process behind; a check that cannot answer says so (the caller then builds the report in one pass)."""

from __future__ import annotations

import io
import json

import pytest

from tunewire_server.datasets import arrival
from tunewire_server.datasets.arrival import ArrivalCheck, CheckFailed, GrowingFile, check_growing
from tunewire_server.datasets.report import DatasetProblem, build_report

ROWS = [{"text": "good film", "label": "pos"}, {"text": "", "label": None}, {"text": "bad", "label": "neg"},
        {"text": "x" * 300, "label": 3}, {"n": 123456789012345678901234567890, "label": "pos"}]


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# Problem rows at chunk boundaries: a non-UTF-8 byte, CRLF and a lone CR, a blank line of Unicode spaces,
# an empty row, a key that is not UTF-8.
TRICKY = (jsonl(ROWS) + b'{"text": "caf\xe9", "label": "neg"}\r\n' + b'\r\n' + b'{"text": " ", "label": "pos"}\r'
          + "\u2028\u00a0\n".encode() + b'{"caf\xc3": 1, "label": "neg"}\n' + b'{"text": "\xe2\x82\xac ok"}')

CASES = {
    "jsonl": (TRICKY, "jsonl", "label"),
    "not-json-at-the-end": (jsonl(ROWS) + b'{"text": "cut', "jsonl", ""),
    "nan": (jsonl(ROWS[:2]) + b'{"a": NaN}\n', "jsonl", ""),
    "csv": (b'text,label\r\ngood,pos\r\n,\r\n"caf\xe9",neg\r\n"two\nlines",pos\r\n\r\nok,pos\r\n', "csv", "label"),
    "tsv": (b"a\tb\n1\t\xff\n\t\n", "tsv", "b"),
    "empty": (b"\n\n", "jsonl", ""),
}


def one_shot(tmp_path, data: bytes, fmt: str, label: str):
    path = tmp_path / f"whole.{fmt}"
    path.write_bytes(data)
    try:
        return build_report(path, fmt, label)
    except DatasetProblem as exc:
        return f"DatasetProblem: {exc}"


def fed(path, data: bytes, step: int, check: ArrivalCheck):
    """Append `data` to `path` `step` bytes at a time, announcing each append, then take the result."""
    with open(path, "ab", buffering=0) as f:
        for start in range(0, len(data), step):
            f.write(data[start:start + step])
            check.grow(start + len(data[start:start + step]))
    try:
        return check.result()
    except DatasetProblem as exc:
        return f"DatasetProblem: {exc}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_report_built_as_bytes_arrive_is_the_one_shot_report(tmp_path, case):
    data, fmt, label = CASES[case]
    expected = one_shot(tmp_path, data, fmt, label)
    for step in (1, 3, 4096):
        path = tmp_path / f"partial-{step}"
        path.touch()
        got = fed(path, data, step, ArrivalCheck(path, fmt, label))
        assert got == expected, (case, step)


def test_the_tricky_file_reports_its_problem_rows():
    # What the equality above is about: these rows are reported (so a reader that loses them fails it).
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        report = one_shot(Path(d), *CASES["jsonl"])
    assert [(p.row, p.kind, p.column) for p in report.problem_rows] == [
        (2, "EMPTY", ""), (6, "NOT_UTF8", "text"), (8, "NOT_UTF8", "caf?")]
    assert report.num_rows == 9
    assert {c.name: c.type for c in report.columns}["n"] == "integer"  # not a float: past 64 bits, json's int


class Announcements(io.StringIO):
    """The server's side of the pipe in one process: each read announces the next size, then seals."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__("".join(f"{n}\n" for n in sizes) + arrival.SEAL + "\n")


@pytest.mark.parametrize("step", [1, 2, 5, 64])
def test_the_child_reads_never_past_the_announced_size(tmp_path, step):
    data, fmt, label = CASES["jsonl"]
    path = tmp_path / "f.jsonl"
    path.write_bytes(data + b"garbage past the announced size\n")  # must never be read
    sizes = list(range(step, len(data), step)) + [len(data)]
    answer = check_growing(path, fmt, label, Announcements(sizes))
    assert json.loads(answer["report"]) == json.loads(one_shot(tmp_path, data, fmt, label).to_json())


def test_a_closed_announcement_pipe_abandons_the_read(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(jsonl(ROWS))
    with pytest.raises(arrival.Abandoned), GrowingFile(path, io.StringIO("10\n")) as raw:
        while raw.read(4):
            pass


def test_an_abandoned_check_ends_its_process(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(jsonl(ROWS))
    check = ArrivalCheck(path, "jsonl")
    proc = check._proc
    check.grow(10)
    check.abandon()
    assert proc.poll() is not None
    with pytest.raises(CheckFailed):
        check.result()


def test_a_check_whose_file_is_gone_fails_so_the_caller_reads_it_whole(tmp_path):
    check = ArrivalCheck(tmp_path / "missing.jsonl", "jsonl")
    with pytest.raises(CheckFailed):
        check.result()


def test_only_text_formats_of_some_size_are_checked_as_they_arrive():
    big = arrival.MIN_STREAMED_BYTES
    assert arrival.streams("jsonl", big) and arrival.streams("csv", big) and arrival.streams("tsv", big)
    assert not arrival.streams("parquet", big) and not arrival.streams("jsonl", big - 1)
