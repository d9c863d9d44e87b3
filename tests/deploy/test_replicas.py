"""The replicas overlays (docs/scaling.md): N GPU pods sharing one PostgreSQL queue and one S3 artifact store.

What the schemas cannot say: the pieces the server needs to share a queue are there and fit the server's
settings (the store URL and S3 credentials from Secrets, the replica's name from the downward API, one
checkpoint key for all, a grace period that fits a checkpoint upload), the pods spread and drain one at a
time, and the pod is the base's pod (probes, security) with only what scaling needs changed.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from tests.deploy.tools import (
    REPLICA_OVERLAYS,
    container_env,
    of_kind,
    only,
    quantity,
    render,
    server_container,
)

# What terminationGracePeriodSeconds is sized for (k8s/components/replicas/deployment-patch.yaml, docs/scaling.md).
ASSUMED_CHECKPOINT_BYTES = 16 * 10**9
ASSUMED_UPLOAD_BYTES_PER_S = 100 * 10**6
ASSUMED_LOCAL_SAVE_S = 60
STORE_URL = "postgresql://tunewire:secret@tunewire-db-rw.tunewire:5432/tunewire"


@pytest.fixture(params=REPLICA_OVERLAYS)
def overlay(request) -> str:
    return request.param


def env_var(container: dict, name: str) -> dict:
    found = [v for v in container.get("env", []) if v["name"] == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


@pytest.fixture
def settings(objects, container, tmp_path, monkeypatch):
    """The server's settings in such a pod: the ConfigMap, literal env, and stand-ins for what Secrets and the
    downward API give (the store URL, the token file, POD_NAME)."""
    from tunewire_server.config import load_settings

    env = container_env(objects, container)
    tokens = tmp_path / "auth-tokens"
    tokens.write_text("test-token\n")
    env.update(TUNEWIRE_AUTH_TOKENS_FILE=str(tokens), TUNEWIRE_STORE=STORE_URL)
    monkeypatch.setenv("POD_NAME", "tunewire-7d9f-abcde")
    return load_settings([], environ=env)


# --- many pods, one GPU each --------------------------------------------------------------------------------------

def test_three_pods_rolled_one_at_a_time_without_an_extra_gpu(deployment):
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    # A surge pod would need a GPU more than the pods hold; one pod down at a time hands one job over.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_one_gpu_per_pod_on_gpu_nodes(pod, container):
    gpu_pod = only(render("gpu"), "Deployment")["spec"]["template"]["spec"]
    for section in ("requests", "limits"):
        assert quantity(container["resources"][section]["nvidia.com/gpu"]) == 1, section
    assert pod["nodeSelector"] == gpu_pod["nodeSelector"]
    assert pod["tolerations"] == gpu_pod["tolerations"]


def test_the_pod_is_the_base_pod(pod, container):
    """Same probes, security context and service account as the base; no new container or privilege."""
    base = only(render("base"), "Deployment")["spec"]["template"]["spec"]
    base_container = server_container({"spec": {"template": {"spec": base}}})
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe] == base_container[probe], probe
    assert container["securityContext"] == base_container["securityContext"]
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken", "enableServiceLinks"):
        assert pod[key] == base[key], key
    assert container["ports"] == base_container["ports"]


def test_pods_spread_over_nodes(pod, deployment):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    by_key = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    node = by_key["kubernetes.io/hostname"]
    assert node["whenUnsatisfiable"] == "DoNotSchedule" and node["maxSkew"] == 1
    for constraint in by_key.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
        assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_disruption_budget_lets_drains_through_one_pod_at_a_time(objects, deployment):
    pdb = only(objects, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]


# --- one queue, one artifact store --------------------------------------------------------------------------------

def test_replica_name_is_the_pod_name(container, settings):
    source = env_var(container, "POD_NAME")["valueFrom"]["fieldRef"]
    assert source["fieldPath"] == "metadata.name"
    assert settings.replica_id == "tunewire-7d9f-abcde", "the server names itself after POD_NAME"


def test_store_url_comes_from_a_secret(objects, container, settings):
    ref = env_var(container, "TUNEWIRE_STORE")["valueFrom"]["secretKeyRef"]
    assert ref.get("optional", False) is False, "without the store a replica must not start on its own SQLite"
    clusters = of_kind(objects, "Cluster")
    if clusters:  # CloudNativePG: the owner's Secret the operator generates, with a ready URL under `uri`
        assert ref == {"name": f"{clusters[0]['metadata']['name']}-app", "key": "uri"}
    else:
        assert ref == {"name": "tunewire-store", "key": "url"}
    configmap_keys = {k for cm in of_kind(objects, "ConfigMap") for k in cm.get("data", {})}
    assert "TUNEWIRE_STORE" not in configmap_keys, "the URL holds a password: never in the ConfigMap"
    assert settings.store == STORE_URL


def test_shared_artifact_store_is_s3_with_credentials_from_a_secret(container, settings):
    from tunewire_server.artifacts.s3 import S3ArtifactStore
    from tunewire_server.shared_store import open_shared

    assert settings.artifacts.startswith("s3://")
    assert isinstance(open_shared(settings), S3ArtifactStore)  # opens without contacting anything
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env_var(container, name)["valueFrom"]["secretKeyRef"]["name"] == "tunewire-s3", name


def test_lease_settings_are_consistent(settings):
    assert 0 < settings.heartbeat_s < settings.lease_s
    assert settings.lease_s >= 2 * settings.heartbeat_s, "one missed heartbeat must not lose the lease"
    assert settings.event_poll_s <= 2


def test_every_replica_reads_one_checkpoint_key(pod, container, settings):
    """The key is DATA_DIR/checkpoint.key (checkpoints.KEY_FILE): the Secret is mounted over exactly that path,
    read-only, after the data volume it lies in."""
    from tunewire_server.checkpoints import KEY_FILE

    mounts = container["volumeMounts"]
    key_path = PurePosixPath(settings.data_dir) / KEY_FILE
    [mount] = [m for m in mounts if PurePosixPath(m["mountPath"]) == key_path]
    assert mount.get("readOnly") is True and mount["subPath"] == KEY_FILE
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "tunewire-checkpoint-key"
    assert [i["key"] for i in volume["secret"]["items"]] == [KEY_FILE]
    data_index = next(i for i, m in enumerate(mounts) if PurePosixPath(m["mountPath"]) == settings.data_dir)
    assert mounts.index(mount) > data_index


def test_a_provided_key_file_is_read_not_replaced(tmp_path):
    """What the mount relies on: with the key file there (and read-only), the server reads it and writes nothing."""
    from tunewire_server.checkpoints import KEY_FILE, load_or_create_key

    key = "ab" * 32
    (tmp_path / KEY_FILE).write_text(key + "\n")
    (tmp_path / KEY_FILE).chmod(0o444)
    assert load_or_create_key(tmp_path) == bytes.fromhex(key)
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


def test_per_pod_volumes_not_shared_claims(objects, pod):
    """ReadWriteOnce claims cannot be shared by pods on different nodes: each pod gets its own, with it."""
    assert of_kind(objects, "PersistentVolumeClaim") == []
    for name in ("data", "cache"):
        volume = next(v for v in pod["volumes"] if v["name"] == name)
        assert set(volume) == {"name", "ephemeral"}, volume
        spec = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert spec["accessModes"] == ["ReadWriteOnce"]
        assert quantity(spec["resources"]["requests"]["storage"]) >= quantity("50Gi")


# --- shutdown -----------------------------------------------------------------------------------------------------

def test_grace_period_fits_a_checkpoint_upload(pod, settings):
    """SIGTERM: the job checkpoints, the checkpoint is uploaded, the job is queued again. shutdown_grace_s bounds
    that; SIGKILL comes terminationGracePeriodSeconds after SIGTERM."""
    needed = ASSUMED_LOCAL_SAVE_S + ASSUMED_CHECKPOINT_BYTES / ASSUMED_UPLOAD_BYTES_PER_S
    assert settings.shutdown_grace_s >= needed, (settings.shutdown_grace_s, needed)
    assert pod["terminationGracePeriodSeconds"] >= settings.shutdown_grace_s + 15
    single = only(render("gpu"), "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > single["terminationGracePeriodSeconds"]


# --- PostgreSQL ---------------------------------------------------------------------------------------------------

def test_cloudnative_pg_cluster():
    cluster = only(render("replicas"), "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["namespace"] == "tunewire"
    spec = cluster["spec"]
    assert spec["instances"] >= 2, "a standby to fail over to"
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert quantity(spec["storage"]["size"]) >= quantity("1Gi")
    # The server's connections (a pool of up to 8 and one LISTEN per replica) fit with room to spare.
    replicas = only(render("replicas"), "Deployment")["spec"]["replicas"]
    assert int(spec["postgresql"]["parameters"]["max_connections"]) >= 3 * replicas * 9
    labels = cluster["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "database"


def test_external_postgres_has_no_cluster():
    objects = render("replicas/external-postgres")
    assert of_kind(objects, "Cluster") == []
    with_cnpg = render("replicas")
    strip = {"Cluster"}
    assert sorted(o["kind"] for o in objects) == sorted(o["kind"] for o in with_cnpg if o["kind"] not in strip)
