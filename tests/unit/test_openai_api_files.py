"""openai_api.files: names and formats of uploaded files, their measure, and the file object."""

from __future__ import annotations

import hashlib
import io

from tunewire_server.openai_api.files import _measure, _name_and_format


def test_the_format_comes_from_the_extension_and_defaults_to_jsonl():
    assert _name_and_format("data.csv") == ("data.csv", "csv")
    assert _name_and_format("dir/sub\\train.JSONL") == ("train.JSONL", "jsonl")
    assert _name_and_format("noext") == ("noext", "jsonl") and _name_and_format(None)[1] == "jsonl"


def test_size_and_sha256_in_one_pass_leave_the_file_at_its_start():
    data = b"x" * (3 * 1024 * 1024 + 5)
    f = io.BytesIO(data)
    assert _measure(f) == (len(data), hashlib.sha256(data).hexdigest()) and f.tell() == 0
