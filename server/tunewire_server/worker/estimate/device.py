"""The device the server trains on and the memory it has for training."""

from __future__ import annotations

from pathlib import Path

from tunewire_server.estimates.protocol import DeviceFacts


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's limit less its use (v2, else v1), or None without a limit."""
    limit, used = _read_int(root / "memory.max"), _read_int(root / "memory.current")
    if limit is None:
        limit, used = _read_int(root / "memory" / "memory.limit_in_bytes"), \
            _read_int(root / "memory" / "memory.usage_in_bytes")
        if limit is not None and limit >= 1 << 60:  # v1's "no limit" is a huge number
            limit = None
    if limit is None or used is None:
        return None
    return max(0, limit - used)


def cpu_available() -> int:
    """RAM a new process could use now: MemAvailable, capped by the cgroup's headroom."""
    values = [v for v in (_meminfo_available(), cgroup_headroom()) if v is not None]
    return min(values) if values else 0


def detect() -> DeviceFacts:
    """The training device (CUDA device 0 when there is one, as the training worker picks) and its memory.
    This process has imported torch as the training worker will, so its use is not counted as free."""
    import torch

    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(0)
        return DeviceFacts(name=f"cuda:0 ({torch.cuda.get_device_name(0)})", kind="cuda", memory_bytes=int(free))
    return DeviceFacts(name="cpu", kind="cpu", memory_bytes=cpu_available())
