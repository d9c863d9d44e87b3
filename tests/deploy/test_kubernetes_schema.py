"""Each overlay, rendered by `kubectl kustomize`, validates strictly against the Kubernetes API schemas.

kubernetes-validate's command line only *warns* about a kind/apiVersion it has no schema for (a typo, or an API
the target version removed) and exits 0; its Python API raises SchemaNotFoundError instead. The helper below turns
every such outcome into a failure, and the negative tests prove that it does.

One exception, by name: custom resources whose operator's CRD schema is not available offline (CRD_SKIPPED:
apiVersion and kind, with the reason). Those are left out of the schema check, and only those: the same kind
under another apiVersion, or a misspelt kind, still fails. test_replicas.py checks what they must hold.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from kubernetes_validate.utils import InvalidSchemaError, SchemaNotFoundError, VersionNotSupportedError

from tests.deploy.tools import ALL_OVERLAYS, REPLICA_OVERLAYS, only, render

# The newest Kubernetes release the installed schemas cover, and the oldest one these manifests support
# (native gRPC probes are GA from 1.27; 1.31 is the oldest release the major clouds still run).
CURRENT_K8S = "1.37"
OLDEST_K8S = "1.31"

# Custom resources left out of the strict schema check: (apiVersion, kind) -> why.
CRD_SKIPPED = {
    ("postgresql.cnpg.io/v1", "Cluster"): (
        "CloudNativePG's CRD schema ships with its operator; kubernetes-validate knows only the Kubernetes API "
        "and nothing here provides that schema offline"),
}


def schema_checked(objects: list[dict]) -> list[dict]:
    """The objects the Kubernetes schemas cover: all but the CRD_SKIPPED custom resources."""
    return [o for o in objects if (o.get("apiVersion"), o.get("kind")) not in CRD_SKIPPED]


def validation_errors(objects: list[dict], k8s_version: str) -> list[str]:
    """Every problem with `objects` against `k8s_version`'s strict schemas; unknown kinds/versions included."""
    errors = []
    for obj in objects:
        what = f"{obj.get('apiVersion')} {obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        try:
            validated = kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{what}: {path}: {exc.message}")
        except (SchemaNotFoundError, InvalidSchemaError, VersionNotSupportedError) as exc:
            errors.append(f"{what}: {exc.message}")
        else:
            # The library falls back to an older schema set when the asked-for one is missing: refuse that.
            if validated != k8s_version:
                errors.append(f"{what}: validated against {validated}, not {k8s_version}")
    return errors


@pytest.mark.parametrize("k8s_version", [CURRENT_K8S, OLDEST_K8S])
@pytest.mark.parametrize("overlay", ["base", *ALL_OVERLAYS])
def test_rendered_overlay_validates_strictly(overlay, k8s_version):
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment"} <= kinds
    if overlay in REPLICA_OVERLAYS:  # per-pod volumes instead of the shared claims; voluntary evictions bounded
        assert "PodDisruptionBudget" in kinds and "PersistentVolumeClaim" not in kinds
    else:
        assert "PersistentVolumeClaim" in kinds
    checked = schema_checked(objects)
    assert len(objects) - len(checked) == (1 if overlay == "replicas" else 0), "only the CNPG Cluster is skipped"
    assert validation_errors(checked, k8s_version) == []


def test_the_skipped_custom_resource_has_no_schema_here():
    """The skip is needed (the day a schema is found, validate it instead), and the skipped object, validated
    anyway, fails the way an unknown kind does."""
    cluster = only(render("replicas"), "Cluster")
    assert (cluster["apiVersion"], cluster["kind"]) in CRD_SKIPPED
    errors = validation_errors([cluster], CURRENT_K8S)
    assert len(errors) == 1 and "Couldn't find schema" in errors[0], errors


@pytest.mark.parametrize("change", [{"kind": "Clustr"}, {"apiVersion": "postgresql.cnpg.io/v2"}])
def test_skipping_is_by_exact_api_version_and_kind(change):
    cluster = copy.deepcopy(only(render("replicas"), "Cluster"))
    cluster.update(change)
    assert schema_checked([cluster]) == [cluster]
    assert validation_errors(schema_checked([cluster]), CURRENT_K8S), "an unknown custom resource must fail"


@pytest.mark.parametrize("api_version", ["apps/v1beta9", "extensions/v1beta1", "tunewire.example.com/v1"])
def test_unknown_api_version_fails(api_version):
    deployment = copy.deepcopy(only(render("gpu"), "Deployment"))
    deployment["apiVersion"] = api_version
    errors = validation_errors([deployment], CURRENT_K8S)
    assert len(errors) == 1 and "Couldn't find schema" in errors[0], errors


def test_unknown_kind_fails():
    service = copy.deepcopy(only(render("gpu"), "Service"))
    service["kind"] = "Servise"
    errors = validation_errors([service], CURRENT_K8S)
    assert len(errors) == 1 and "Couldn't find schema" in errors[0], errors


def test_unknown_nested_field_fails():
    """Strict mode reaches into referenced definitions: a misspelt securityContext field is an error."""
    deployment = copy.deepcopy(only(render("gpu"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    errors = validation_errors([deployment], CURRENT_K8S)
    assert len(errors) == 1 and "runAsNonroot" in errors[0], errors


def test_grpc_probe_port_must_be_a_number():
    """Unlike httpGet/tcpSocket, a gRPC probe cannot name its port: the schema says so, and we rely on it."""
    deployment = copy.deepcopy(only(render("gpu"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    errors = validation_errors([deployment], CURRENT_K8S)
    assert len(errors) == 1 and "readinessProbe.grpc.port" in errors[0], errors


def test_unsupported_kubernetes_version_fails():
    errors = validation_errors([only(render("gpu"), "Service")], "1.99")
    assert errors and "does not support version" in errors[0], errors
