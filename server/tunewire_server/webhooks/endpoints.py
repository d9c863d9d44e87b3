"""The webhook settings checked: endpoint URLs and the Standard Webhooks signing secret."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the Standard Webhooks spec: secrets of 24 to 64 random bytes
MAX_SECRET_BYTES = 64


def parse_urls(value: str) -> tuple[str, ...]:
    """The endpoint URLs of the comma-separated setting `value`, in order, without duplicates; ValueError
    naming webhook_urls for one that is not an absolute http(s) URL with a host."""
    urls: list[str] = []
    for url in (u.strip() for u in value.split(",")):
        if not url:
            continue
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise ValueError(f"webhook_urls: {url!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"webhook_urls: {url!r} must start with http:// or https://")
        if not parts.hostname:
            raise ValueError(f"webhook_urls: {url!r} names no host")
        if parts.fragment:
            raise ValueError(f"webhook_urls: {url!r} must not have a #fragment")
        if url not in urls:
            urls.append(url)
    return tuple(urls)


def secret_key(secret: str, name: str = "webhook_secret") -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError naming the setting `name` if it is not one
    (not the prefix, not strict base64, or not 24 to 64 bytes). The secret itself is never in the message."""
    secret = secret.strip()
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"{name} must look like whsec_<base64> (the Standard Webhooks form)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: the part after whsec_ is not valid base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"{name}: the key must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
                         f"got {len(key)} (generate one: whsec_ + base64 of 32 random bytes)")
    return key
