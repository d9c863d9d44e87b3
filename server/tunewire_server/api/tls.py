"""The server's TLS credentials, checked before binding: grpc only says "Failed to bind to address" when
the key does not match the certificate or a file is not PEM, so the stdlib `ssl` loads each file first and
a bad one is named with the setting that points to it."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from tunewire_server.config import Settings


def _read(setting: str, path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting} {path}: cannot be read ({exc.strerror or exc})") from None


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def check_pem(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
    """Raise ValueError naming the setting when a file is unreadable, not PEM, or the key is not the
    certificate's."""
    for setting, path in (("tls_cert_file", cert_file), ("tls_client_ca_file", client_ca_file)):
        if path is None:
            continue
        _read(setting, path)
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(path))
        except (ssl.SSLError, ValueError):
            raise ValueError(f"{setting} {path}: not a PEM certificate") from None
    _read("tls_key_file", key_file)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert_file), str(key_file), password=_no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            raise ValueError(f"tls_key_file {key_file} is not the private key of tls_cert_file {cert_file} "
                             "(the key does not match the certificate)") from None
        raise ValueError(f"tls_key_file {key_file}: not an unencrypted PEM private key") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """TLS (mutual when tls_client_ca_file is set) from checked files."""
    s = settings
    check_pem(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
    ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None
    return grpc.ssl_server_credentials([(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
                                       root_certificates=ca, require_client_auth=ca is not None)
