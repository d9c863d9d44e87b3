"""The gRPC contract: `buf lint`, and `buf breaking` against a baseline that means something everywhere.

Comparing against `.git#branch=main` is empty in CI, where a fresh clone's HEAD *is* main. So the main check is
against a committed baseline image of the contract (contract/tunewire-v1.image.yaml, built from main when this
check was added): every clone has it, and any change to protos/ that breaks a v1 client fails, on any branch.
A second check compares the working tree with main (the local branch, else origin/main, else HEAD), which catches
an uncommitted or not-yet-merged break early. The negative tests prove both comparisons bite.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.deploy.tools import ROOT, describe, run, tool

BASELINE = ROOT / "tests" / "deploy" / "contract" / "tunewire-v1.image.yaml"
# A top-level field line inside a message: `  string base_model = 1;`
FIELD = re.compile(r"^  (?:optional |repeated )?[\w.]+ (\w+) = \d+;$", re.MULTILINE)


def test_buf_lint():
    proc = run(tool("buf"), "lint")
    assert proc.returncode == 0, describe(proc)


def test_no_breaking_change_against_the_baseline():
    proc = run(tool("buf"), "breaking", "--against", BASELINE)
    assert proc.returncode == 0, describe(proc) + "\nA deliberate break needs a new baseline: see its header."


def _git_main_input() -> str:
    """The local main branch as a buf input; else origin/main's commit; else HEAD (a bare detached checkout)."""
    if run("git", "rev-parse", "--verify", "--quiet", "refs/heads/main").returncode == 0:
        return ".git#branch=main"
    for ref in ("refs/remotes/origin/main", "HEAD"):
        commit = run("git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if commit.returncode == 0:
            return f".git#ref={commit.stdout.strip()}"
    pytest.fail("not a git checkout: no main branch and no HEAD to compare the contract with")


def test_no_breaking_change_against_main():
    proc = run(tool("buf"), "breaking", "--against", _git_main_input())
    assert proc.returncode == 0, describe(proc)


@pytest.fixture
def broken_contract(tmp_path):
    """A copy of the module with the first field of job.proto deleted; returns (module dir, field name)."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    job = tmp_path / "protos" / "tunewire" / "v1" / "job.proto"
    text = job.read_text()
    match = FIELD.search(text)
    assert match, "no single-line field found in job.proto"
    job.write_text(text[: match.start()] + text[match.end() + 1:])
    return tmp_path, match.group(1)


@pytest.mark.parametrize("against", ["baseline", "main", "working tree"])
def test_deleting_a_field_is_flagged(broken_contract, against):
    module, field = broken_contract
    reference = {
        "baseline": str(BASELINE),
        "main": f"{ROOT}/{_git_main_input()}",
        "working tree": str(ROOT),
    }[against]
    proc = run(tool("buf"), "breaking", module, "--against", reference, cwd=module)
    assert proc.returncode != 0, describe(proc)
    output = proc.stdout + proc.stderr
    assert "deleted" in output and f'"{field}"' in output, describe(proc)
