"""The webhook settings (config.py, webhooks/endpoints.py): URLs and the whsec_ secret are checked at
start; a bad one stops the server with a message naming the setting (and never the secret)."""

from __future__ import annotations

import base64

import pytest

from tests.support.webhooks import new_secret
from tunewire_server import __main__ as server_main
from tunewire_server.config import Settings, load_settings
from tunewire_server.webhooks.endpoints import parse_urls, secret_key


def test_urls_are_parsed_in_order_without_duplicates():
    assert parse_urls(" https://a.example/h , http://b:8080/x,https://a.example/h,") == (
        "https://a.example/h", "http://b:8080/x")
    assert parse_urls("") == ()


@pytest.mark.parametrize(("value", "says"), [
    ("ftp://a.example/h", "must start with http:// or https://"), ("a.example/h", "must start with http"),
    ("http:///nohost", "names no host"), ("http://a:99999/", "not a valid URL"),
    ("https://a/h#frag", "fragment")])
def test_bad_urls_are_named(value, says):
    with pytest.raises(ValueError, match="webhook_urls") as info:
        parse_urls(value)
    assert says in str(info.value)


def test_secrets_must_be_whsec_base64_of_24_to_64_bytes():
    assert len(secret_key("whsec_" + base64.b64encode(b"k" * 32).decode())) == 32
    for bad, says in [("k" * 40, "whsec_<base64>"), ("whsec_not*base64!", "not valid base64"),
                      ("whsec_" + base64.b64encode(b"k" * 8).decode(), "24 to 64 bytes"),
                      ("whsec_" + base64.b64encode(b"k" * 65).decode(), "24 to 64 bytes")]:
        with pytest.raises(ValueError, match=says) as info:
            secret_key(bad)
        assert "webhook_secret" in str(info.value) and bad not in str(info.value)


def test_settings_read_the_secret_from_a_file_and_check_it(tmp_path):
    secret = new_secret()
    path = tmp_path / "secret"
    path.write_text(f"\n{secret}\n")
    settings = load_settings([], {"TUNEWIRE_WEBHOOK_URLS": "https://a/h", "TUNEWIRE_WEBHOOK_SECRET_FILE": str(path)})
    assert settings.webhook_signing_secret() == secret
    path.write_text("whsec_short")
    with pytest.raises(ValueError, match="webhook_secret_file"):
        Settings(webhook_urls="https://a/h", webhook_secret_file=path)
    with pytest.raises(ValueError, match="not both"):
        Settings(webhook_secret=secret, webhook_secret_file=path)
    with pytest.raises(ValueError, match="webhook_urls needs a signing secret"):
        Settings(webhook_urls="https://a/h")
    with pytest.raises(ValueError, match="webhook_retry_max_s"):
        Settings(webhook_retry_base_s=10, webhook_retry_max_s=5)


@pytest.mark.parametrize(("argv", "says"), [
    (["--webhook-urls", "ftp://x/h", "--webhook-secret", "whsec_" + "A" * 44], "must start with http://"),
    (["--webhook-urls", "http://x/h", "--webhook-secret", "nope"], "whsec_<base64>"),
    (["--webhook-urls", "http://x/h"], "needs a signing secret")])
def test_a_bad_webhook_setting_fails_the_start_with_a_clear_message(argv, says, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        server_main.main([*argv, "--data-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and says in err
