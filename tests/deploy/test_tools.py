"""The tool binaries the deployment checks need are installed (the dev extra) and run here, offline."""

import pytest

from tests.deploy.tools import describe, run, tool

VERSION_COMMANDS = {
    "hadolint": ["--version"],
    "kubectl": ["version", "--client"],
    "yamllint": ["--version"],
    "buf": ["--version"],
    "grpcurl": ["-version"],
}


@pytest.mark.parametrize("name", sorted(VERSION_COMMANDS))
def test_tool_runs(name):
    proc = run(tool(name), *VERSION_COMMANDS[name], timeout=30)
    assert proc.returncode == 0, describe(proc)
    assert (proc.stdout + proc.stderr).strip(), f"{name} printed no version"


def test_kubernetes_validate_is_importable():
    import kubernetes_validate

    assert kubernetes_validate.latest_version()


def test_a_missing_tool_fails_the_test_rather_than_skipping_it():
    with pytest.raises(pytest.fail.Exception, match="not found"):
        tool("tunewire-no-such-tool")
