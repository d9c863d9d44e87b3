"""The CPU's memory for training (worker/estimate/device.py): MemAvailable, capped by the cgroup."""

from __future__ import annotations

from tunewire_server.worker.estimate import device


def test_cgroup_v2_headroom_and_no_limit(tmp_path):
    (tmp_path / "memory.max").write_text("1000\n")
    (tmp_path / "memory.current").write_text("400\n")
    assert device.cgroup_headroom(tmp_path) == 600
    (tmp_path / "memory.max").write_text("max\n")
    assert device.cgroup_headroom(tmp_path) is None


def test_cgroup_v1_headroom(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("2000")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text("500")
    assert device.cgroup_headroom(tmp_path) == 1500
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(1 << 62))  # v1's "unlimited"
    assert device.cgroup_headroom(tmp_path) is None


def test_this_machine_has_some_memory_available():
    assert device.cpu_available() > 0
    assert device.detect().memory_bytes > 0
