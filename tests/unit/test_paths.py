"""validation/paths.py: client-named paths stay under their root, and only regular files of bounded size
are read (a FIFO or device is never opened for reading)."""

from __future__ import annotations

import os

import pytest

from tunewire_server.validation import paths
from tunewire_server.validation.paths import FileTooLarge, NotRegularFile, UnsafePath, resolve_under


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.jsonl").write_text("{}\n")
    (tmp_path / "outside.txt").write_text("secret")
    return root


def test_a_relative_path_resolves_to_its_real_path_inside_the_root(root):
    assert resolve_under(root, "sub/data.jsonl") == (root / "sub" / "data.jsonl").resolve()
    assert resolve_under(root, "sub/not-yet.jsonl") == (root / "sub" / "not-yet.jsonl").resolve()
    assert resolve_under(root, "sub/./data.jsonl") == (root / "sub" / "data.jsonl").resolve()


@pytest.mark.parametrize("relative,message", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("a\x00b", "NUL byte"),
    ("/etc/passwd", "must be relative"),
    ("\\windows", "must be relative"),
    ("~/x", "must be relative"),
    ("C:stuff", "must be relative"),
    ("../outside.txt", "must not contain '..'"),
    ("sub/../../outside.txt", "must not contain '..'"),
    ("sub\\..\\..\\outside.txt", "must not contain '..'"),
    ("%2e%2e/outside.txt", "must not contain '..'"),
    ("%252e%252e/outside.txt", "must not contain '..'"),
    ("%2Fetc/passwd", "must be relative"),
    ("sub/data%20file.jsonl", "must not be percent-encoded"),
    ("a" * 1025, "too long"),
    ("sub/" + "n" * 256, "too long"),
])
def test_paths_that_could_leave_the_root_are_refused(root, relative, message):
    with pytest.raises(UnsafePath, match=message):
        resolve_under(root, relative)


def test_a_symlink_inside_the_root_is_followed_and_one_out_of_it_refused(root, tmp_path):
    (root / "inside").symlink_to(root / "sub" / "data.jsonl")
    (root / "escape").symlink_to(tmp_path / "outside.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    assert resolve_under(root, "inside") == (root / "sub" / "data.jsonl").resolve()
    for relative in ("escape", "escape-dir/outside.txt"):
        with pytest.raises(UnsafePath, match="leads outside the server's root folder"):
            resolve_under(root, relative)


@pytest.mark.parametrize("name,ok", [("bert-base-uncased", True), ("org/model.v2", True), ("org/m/extra", False),
                                     ("../x", False), ("org/..", False), ("-x", False), ("", False)])
def test_hub_ids(name, ok):
    assert paths.looks_like_hub_id(name) is ok


def test_a_fifo_or_a_directory_is_never_opened_for_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(NotRegularFile, match="it is a FIFO"):
        paths.open_regular(tmp_path / "fifo")
    with pytest.raises(NotRegularFile, match="it is a directory"):
        paths.read_limited(tmp_path)
    assert not paths.is_regular_file(tmp_path / "fifo")
    assert not paths.is_regular_file(tmp_path / "missing")
    assert not paths.is_regular_file("bad\x00name")


def test_read_limited_reads_up_to_the_limit_and_refuses_more(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert paths.read_limited(tmp_path / "f", 100) == b"x" * 100
    with pytest.raises(FileTooLarge, match="larger than 99 bytes"):
        paths.read_limited(tmp_path / "f", 99)


def test_read_limited_stops_at_the_limit_when_st_size_lies():
    # /proc files report size 0 but have content: the limit holds while reading
    with pytest.raises(FileTooLarge):
        paths.read_limited("/proc/self/status", 10)


def test_read_limited_can_refuse_a_symlink(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    assert paths.read_limited(tmp_path / "link") == b"x"
    with pytest.raises(OSError):
        paths.read_limited(tmp_path / "link", follow_symlinks=False)


def test_read_text_limited_wants_utf8(tmp_path):
    (tmp_path / "ok").write_text("héllo", encoding="utf-8")
    (tmp_path / "bad").write_bytes(b"\xff\xfe")
    assert paths.read_text_limited(tmp_path / "ok") == "héllo"
    with pytest.raises(UnicodeDecodeError):
        paths.read_text_limited(tmp_path / "bad")


def test_open_under_opens_the_file_under_the_root_and_refuses_what_leaves_it(root, tmp_path):
    fd = paths.open_under(root, "sub/data.jsonl")
    try:
        assert os.read(fd, 10) == b"{}\n"
    finally:
        os.close(fd)
    (root / "escape").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(UnsafePath, match="leads outside"):
        paths.open_under(root, "escape")
    os.mkfifo(root / "fifo")
    with pytest.raises(NotRegularFile):
        paths.open_under(root, "fifo")


def test_special_entry_names_a_fifo_in_a_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    assert paths.special_entry(tmp_path) is None
    os.mkfifo(tmp_path / "tokenizer.json")
    assert paths.special_entry(tmp_path) == "tokenizer.json"
    assert paths.special_entry(tmp_path / "no-such-folder") is None
