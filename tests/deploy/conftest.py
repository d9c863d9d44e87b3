"""Fixtures of the rendered manifests, shared by the manifest tests: each test module says which overlays
it renders with its own `overlay` fixture (params), and these build on it."""

from __future__ import annotations

import pytest

from tests.deploy.tools import only, render, server_container


@pytest.fixture
def objects(overlay) -> list[dict]:
    return render(overlay)


@pytest.fixture
def deployment(objects) -> dict:
    return only(objects, "Deployment")


@pytest.fixture
def pod(deployment) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture
def container(deployment) -> dict:
    return server_container(deployment)
