"""What the schemas cannot say about the rendered overlays: the pieces fit together and fit the server."""

from __future__ import annotations

import math
import tomllib
from pathlib import PurePosixPath

import pytest

from tests.deploy.tools import (
    ALL_OVERLAYS,
    OVERLAYS,
    REPLICA_OVERLAYS,
    ROOT,
    container_env,
    of_kind,
    only,
    quantity,
    render,
    server_container,
)

NAMESPACE = "tunewire"
EXTERNAL_SECRET = "tunewire-secrets"  # created by the operator (docs/deploy.md), never rendered by overlays/gpu
LABEL_KEYS = ("name", "instance", "component", "part-of", "version", "managed-by")
# Settings another change adds to config.py; until then the server ignores these variables.
PENDING_SETTINGS = {"metrics_port", "auth_tokens_file"}
# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}


def tuning_service_name() -> str:
    from tunewire.v1 import tuning_service_pb2

    return tuning_service_pb2.DESCRIPTOR.services_by_name["TuningService"].full_name


@pytest.fixture(params=ALL_OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def env(objects, container) -> dict[str, str]:
    return container_env(objects, container)


def port_number(container: dict, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert name in ports, f"the container has no port named {name!r}: {ports}"
    return ports[name]


def settings_from(env: dict[str, str], tmp_path):
    """The server's settings from this environment. Files the pod gets from its Secret (TUNEWIRE_*_FILE) are
    stood in for by temporary ones: the server checks that they exist."""
    from tunewire_server.config import load_settings

    env = dict(env)
    for name in [k for k in env if k.startswith("TUNEWIRE_") and k.endswith("_FILE")]:
        stand_in = tmp_path / name.lower()
        stand_in.write_text("test-token\n")
        env[name] = str(stand_in)
    return load_settings([], environ=env)


# --- shape --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("single", OVERLAYS)
def test_one_replica_recreated_not_rolled(single):
    """One GPU slot and one SQLite store: a rolling update would run two servers at once.
    (The replicas overlays share PostgreSQL instead: test_replicas.py.)"""
    deployment = only(render(single), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_everything_in_one_namespace(objects):
    assert only(objects, "Namespace")["metadata"]["name"] == NAMESPACE
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']} {obj['metadata']['name']}"


# --- probes and shutdown ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_are_grpc_health_checks_on_the_grpc_port(container, probe):
    spec = container.get(probe)
    assert spec, f"no {probe}"
    handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & spec.keys()
    assert handlers == {"grpc"}, f"{probe} must be a native gRPC health check, not {handlers}"
    grpc_port = port_number(container, "grpc")
    assert spec["grpc"]["port"] in (grpc_port, "grpc"), f"{probe} checks port {spec['grpc']['port']}"
    # The server reports exactly these two: "" (the process) and the tuning service.
    assert spec["grpc"].get("service", "") in ("", tuning_service_name())


def test_traffic_waits_for_the_tuning_service(container):
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"]["service"] == tuning_service_name(), probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "give a slow volume a minute at least"


def test_liveness_is_lenient(container):
    """A busy control plane must not be killed in the middle of a training run."""
    live = container["livenessProbe"]
    assert live.get("failureThreshold", 3) * live.get("periodSeconds", 10) >= 60
    assert live.get("timeoutSeconds", 1) >= 5


def test_grace_period_outlasts_the_server_shutdown(pod, env, tmp_path):
    """SIGKILL comes terminationGracePeriodSeconds after SIGTERM; the server needs shutdown_grace_s plus exit time."""
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= settings_from(env, tmp_path).shutdown_grace_s + 15, (grace, env.get("TUNEWIRE_SHUTDOWN_GRACE_S"))


# --- settings -----------------------------------------------------------------------------------------------------

def test_environment_is_valid_server_settings(env, container, tmp_path):
    """Every TUNEWIRE_* variable names a setting (a typo would be ignored silently) and parses."""
    from dataclasses import fields

    from tunewire_server.config import ENV_PREFIX, Settings

    known = {f.name for f in fields(Settings)} | PENDING_SETTINGS
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() not in known)
    assert unknown == [], f"not server settings: {unknown}"
    settings = settings_from(env, tmp_path)
    assert settings.host == "0.0.0.0", "in a pod the server must listen on all interfaces"
    assert settings.port == port_number(container, "grpc")
    assert settings.log_format == "json"
    assert int(env["TUNEWIRE_METRICS_PORT"]) == port_number(container, "metrics")
    assert settings.http_port == port_number(container, "http")


def test_no_service_links(pod):
    """The Service is named `tunewire`: its links would set TUNEWIRE_PORT=tcp://..., the server's own setting."""
    assert pod.get("enableServiceLinks") is False


def test_torch_threads_fit_the_cpu_limit(env, container):
    limit = math.ceil(quantity(container["resources"]["limits"]["cpu"]))
    for var in ("TUNEWIRE_TORCH_THREADS", "OMP_NUM_THREADS"):
        assert var in env, f"set {var}: by default torch uses every core of the node, not the pod's share"
        assert 1 <= int(env[var]) <= limit, (var, env[var], limit)


def test_config_and_secret_references_resolve(objects, overlay, container, pod):
    configmaps = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in of_kind(objects, "Secret")}
    secret_refs = {v["valueFrom"]["secretKeyRef"]["name"] for v in container.get("env", [])
                   if "secretKeyRef" in v.get("valueFrom", {})}
    secret_refs |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    secret_refs |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    config_refs = {s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s}
    assert config_refs and config_refs <= configmaps
    assert secret_refs
    if overlay == "gpu":
        # Real credentials never live in the repository: the operator creates this one Secret.
        assert secrets == set() and secret_refs == {EXTERNAL_SECRET}
        assert f"create secret generic {EXTERNAL_SECRET}" in (ROOT / "docs" / "deploy.md").read_text()
    elif overlay in REPLICA_OVERLAYS:
        # The same, plus the store URL, the S3 credentials and the shared checkpoint key (docs/scaling.md);
        # with CloudNativePG the store URL's Secret is the one its operator generates for the Cluster.
        assert secrets == set()
        clusters = [o["metadata"]["name"] for o in of_kind(objects, "Cluster")]
        store = {f"{clusters[0]}-app"} if clusters else {"tunewire-store"}
        operator_made = store if clusters else set()
        assert secret_refs == {EXTERNAL_SECRET, "tunewire-s3", "tunewire-checkpoint-key"} | store
        scaling = (ROOT / "docs" / "scaling.md").read_text()
        for name in secret_refs - operator_made - {EXTERNAL_SECRET}:
            assert f"create secret generic {name}" in scaling, name
    else:
        assert secret_refs <= secrets, f"unresolved: {secret_refs - secrets}"


def test_auth_tokens_file_is_the_mounted_secret(container, pod, env):
    path = PurePosixPath(env["TUNEWIRE_AUTH_TOKENS_FILE"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in container["volumeMounts"] if path.parent == PurePosixPath(m["mountPath"])]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True, mounts
    secret = volumes[mounts[0]["name"]]["secret"]
    assert path.name in {item["path"] for item in secret["items"]}
    assert secret.get("optional", False) is False, "without client tokens the pod must not start"
    hf_token = next(v for v in container["env"] if v["name"] == "HF_TOKEN")
    assert hf_token["valueFrom"]["secretKeyRef"]["key"] == "hf-token"


# --- storage ------------------------------------------------------------------------------------------------------

def test_claims_match_persistent_volume_claims(objects, pod, container):
    pvcs = {o["metadata"]["name"] for o in of_kind(objects, "PersistentVolumeClaim")}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == pvcs, f"claims {claims} vs PVCs {pvcs}"
    volume_names = [v["name"] for v in pod["volumes"]]
    assert len(volume_names) == len(set(volume_names))
    mounted = [m["name"] for m in container["volumeMounts"]]
    assert set(mounted) == set(volume_names), "every volume is mounted, and only declared volumes are"
    for pvc in of_kind(objects, "PersistentVolumeClaim"):
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert quantity(pvc["spec"]["resources"]["requests"]["storage"]) >= quantity("1Gi")


def _volume_at(path: str, pod: dict, container: dict) -> dict:
    """The volume whose mount holds `path` (the deepest mount wins)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    best = None
    for mount in container["volumeMounts"]:
        mount_path = PurePosixPath(mount["mountPath"])
        inside = PurePosixPath(path) == mount_path or mount_path in PurePosixPath(path).parents
        if inside and (best is None or len(mount_path.parts) > len(PurePosixPath(best["mountPath"]).parts)):
            best = mount
    assert best is not None, f"{path} is on the read-only root filesystem"
    return volumes[best["name"]]


def test_state_lives_on_persistent_volumes(env, pod, container, tmp_path, overlay):
    """One pod: on the PVCs. Many pods: each on volumes of its own (generic ephemeral PVCs), because what must
    outlive a pod is in PostgreSQL and the artifact store (test_replicas.py)."""
    settings = settings_from(env, tmp_path)
    kind = "ephemeral" if overlay in REPLICA_OVERLAYS else "persistentVolumeClaim"
    for what, path in (("data dir", str(settings.data_dir)), ("HF_HOME", env["HF_HOME"])):
        volume = _volume_at(path, pod, container)
        assert kind in volume, f"the {what} {path} must be on a {kind} volume, not {volume}"
    data = _volume_at(str(settings.data_dir), pod, container)
    cache = _volume_at(env["HF_HOME"], pod, container)
    assert data["name"] != cache["name"], "the rebuildable cache and the job data have their own volumes"


def test_scratch_space_is_writable(pod, container):
    for path in ("/tmp", "/dev/shm"):
        assert "emptyDir" in _volume_at(path, pod, container), path


# --- network ------------------------------------------------------------------------------------------------------

def test_service_targets_the_container_ports(objects, deployment, container):
    service = only(objects, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in names or target in names.values(), f"Service port {port['name']} targets {target}"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics", "http"}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["grpc"]["targetPort"] in ("grpc", names["grpc"])
    assert ports["metrics"]["targetPort"] in ("metrics", names["metrics"])
    assert ports["http"]["targetPort"] in ("http", names["http"])


def test_prometheus_scrapes_the_metrics_port(objects, container):
    annotations = only(objects, "Service")["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_number(container, "metrics")
    assert annotations["prometheus.io/path"] == "/metrics"


# --- resources ----------------------------------------------------------------------------------------------------

def test_requests_and_limits(container, pod):
    resources = container["resources"]
    for name in ("cpu", "memory"):
        assert quantity(resources["requests"][name]) <= quantity(resources["limits"][name]), name
    # Memory-backed emptyDirs count against the memory limit.
    shm = sum(quantity(v["emptyDir"]["sizeLimit"]) for v in pod["volumes"]
              if v.get("emptyDir", {}).get("medium") == "Memory")
    assert shm < quantity(resources["limits"]["memory"]) / 2
    # Disk-backed emptyDirs count against the ephemeral-storage limit: past it the pod is evicted.
    scratch = sum(quantity(v["emptyDir"]["sizeLimit"]) for v in pod["volumes"]
                  if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
    assert scratch < quantity(resources["limits"]["ephemeral-storage"])
    assert quantity(resources["requests"]["ephemeral-storage"]) <= quantity(resources["limits"]["ephemeral-storage"])


def test_gpu_counts_are_whole_numbers(container):
    resources = container["resources"]
    for section in ("requests", "limits"):
        for name, value in resources.get(section, {}).items():
            if "gpu" in name:
                count = quantity(value)
                assert count == count.to_integral_value() and count >= 1, f"{section}.{name}={value!r}"
                assert name not in resources.get("requests", {}) or \
                    quantity(resources["requests"][name]) == quantity(resources["limits"][name])


def test_gpu_overlay_takes_one_gpu_on_a_gpu_node():
    deployment = only(render("gpu"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    limits = server_container(deployment)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] in ("1", 1)
    assert any(k.startswith("nvidia.com/") for k in pod.get("nodeSelector", {})), pod.get("nodeSelector")
    assert any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in pod["tolerations"])


def _mentions_gpu(value) -> bool:
    text = str(value).lower()
    return "gpu" in text or "nvidia" in text


def test_cpu_dev_has_no_gpu():
    deployment = only(render("cpu-dev"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    resources = server_container(deployment)["resources"]
    assert not [k for section in resources.values() for k in section if _mentions_gpu(k)], resources
    assert not _mentions_gpu(pod.get("nodeSelector", {}))
    assert not _mentions_gpu(pod.get("affinity", {}))
    assert not _mentions_gpu(pod.get("tolerations", []))
    assert "runtimeClassName" not in pod


def test_cpu_dev_is_smaller_than_gpu():
    small = server_container(only(render("cpu-dev"), "Deployment"))["resources"]
    big = server_container(only(render("gpu"), "Deployment"))["resources"]
    for section in ("requests", "limits"):
        for name in ("cpu", "memory"):
            assert quantity(small[section][name]) < quantity(big[section][name]), (section, name)
    pvc_small = {p["metadata"]["name"]: quantity(p["spec"]["resources"]["requests"]["storage"])
                 for p in of_kind(render("cpu-dev"), "PersistentVolumeClaim")}
    pvc_big = {p["metadata"]["name"]: quantity(p["spec"]["resources"]["requests"]["storage"])
               for p in of_kind(render("gpu"), "PersistentVolumeClaim")}
    assert pvc_small.keys() == pvc_big.keys()
    assert all(pvc_small[name] < pvc_big[name] for name in pvc_small)


# --- security -----------------------------------------------------------------------------------------------------

def test_security_context_is_restricted(pod, container, objects):
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})

    def effective(key):
        return sc.get(key, pod_sc.get(key))

    assert effective("runAsNonRoot") is True
    assert isinstance(effective("runAsUser"), int) and effective("runAsUser") > 0
    assert (effective("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("privileged", False) is False
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert isinstance(pod_sc.get("fsGroup"), int), "the non-root user must be able to write the volumes"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    for volume in pod["volumes"]:
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUME_TYPES, f"volume {volume['name']} is {kinds}"
    assert "initContainers" not in pod and "ephemeralContainers" not in pod
    assert pod.get("automountServiceAccountToken") is False
    namespace = only(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- labels -------------------------------------------------------------------------------------------------------

def test_recommended_labels_everywhere(objects, deployment):
    for obj in [*objects, deployment["spec"]["template"]]:
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in LABEL_KEYS if not labels.get(f"app.kubernetes.io/{k}")]
        assert not missing, f"{obj.get('kind', 'pod template')} {obj['metadata'].get('name', '')} lacks {missing}"
        assert labels["app.kubernetes.io/name"] == "tunewire"
        assert labels["app.kubernetes.io/part-of"] == "tunewire"


def test_selector_is_stable(deployment):
    """A Deployment's selector is immutable: it must not carry labels that change between releases."""
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_version_label_matches_the_image_and_the_package(deployment, container):
    version = deployment["metadata"]["labels"]["app.kubernetes.io/version"]
    image, _, tag = container["image"].rpartition(":")
    assert image and tag == version, (container["image"], version)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version == project["version"], "bump k8s/base (images, labels) and overlays/cpu-dev with the package"
