"""yamllint over the Kubernetes manifests, with the repository's .yamllint; warnings count as failures."""

from tests.deploy.tools import K8S, ROOT, describe, run, tool


def test_k8s_manifests_pass_yamllint():
    proc = run(tool("yamllint"), "--strict", "--config-file", ROOT / ".yamllint", K8S)
    assert proc.returncode == 0, describe(proc)


def test_yamllint_config_catches_problems(tmp_path):
    """The config is in force: an implicit octal file mode and a `yes` boolean are both reported."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: 0440\nenabled: yes\n")
    proc = run(tool("yamllint"), "--strict", "--config-file", ROOT / ".yamllint", bad)
    assert proc.returncode != 0, describe(proc)
    assert "octal-values" in proc.stdout and "truthy" in proc.stdout, describe(proc)
