from pathlib import Path

import pytest

from tunewire_server.config import load_settings


def test_flags_override_environment_override_defaults(tmp_path):
    env = {"TUNEWIRE_PORT": "6000", "TUNEWIRE_DATA_DIR": str(tmp_path), "TUNEWIRE_LOG_FORMAT": "json"}
    s = load_settings(["--port", "7000"], env)
    assert s.port == 7000
    assert s.data_dir == tmp_path.resolve()
    assert s.log_format == "json"
    assert s.model_root == tmp_path.resolve() / "models"
    assert load_settings([], {}).port == 50051


def test_bool_and_path_parsing(tmp_path):
    s = load_settings(["--allow-hub-models", "false", "--model-root", str(tmp_path)], {})
    assert s.allow_hub_models is False
    assert s.model_root == Path(tmp_path).resolve()


@pytest.mark.parametrize("argv, env, message", [
    (["--port", "70000"], {}, "port"),
    (["--log-format", "xml"], {}, "log_format"),
    ([], {"TUNEWIRE_MAX_QUEUED_JOBS": "0"}, "max_queued_jobs"),
    ([], {"TUNEWIRE_PORT": "abc"}, "TUNEWIRE_PORT"),
    (["--training-niceness", "20"], {}, "training_niceness"),
    ([], {"TUNEWIRE_TRAINING_NICENESS": "-1"}, "training_niceness"),
])
def test_bad_settings_are_refused_with_their_name(argv, env, message):
    with pytest.raises(ValueError, match=message):
        load_settings(argv, env)
