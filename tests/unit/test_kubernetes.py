"""The Kubernetes example (deploy/kubernetes), checked against the service and its image.

No cluster is needed: the manifests are parsed, and the ConfigMap's file is read
by the service's own parser with the StatefulSet's environment applied.
"""

from __future__ import annotations

import json
import re
import tomllib

import yaml

from service.config import apply_env_overrides, parse_config
from service.ops.web import ENDPOINTS
from tests.helpers import REPO

DIRECTORY = REPO / "deploy" / "kubernetes"
DOCUMENTS = [doc for path in sorted(DIRECTORY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
DOCKERFILE = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())


def only(kind: str) -> dict:
    (document,) = [d for d in DOCUMENTS if d["kind"] == kind]
    return document


STATEFULSET, CONFIGMAP, PDB, SERVICE = (only(k) for k in ("StatefulSet", "ConfigMap", "PodDisruptionBudget", "Service"))
POD = STATEFULSET["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
ENV = {e["name"]: e for e in CONTAINER["env"]}


def dockerfile(instruction: str) -> str:
    (argument,) = [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.split(None, 1)[:1] == [instruction]]
    return argument


def mount_path(volume: str) -> str:
    (path,) = [m["mountPath"] for m in CONTAINER["volumeMounts"] if m["name"] == volume]
    return path


def port_number(port: int | str) -> int:
    """A probe's port, by number or by the name of a container port."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in CONTAINER["ports"] if p["name"] == port]
    return number


def state_mount() -> str:
    """Where the pod's claim (its one volumeClaimTemplate) is mounted."""
    (template,) = STATEFULSET["spec"]["volumeClaimTemplates"]
    return mount_path(template["metadata"]["name"])


def command() -> list[str]:
    """What the container runs: its command and args, or the image's ENTRYPOINT and CMD they replace."""
    entrypoint = CONTAINER.get("command") or json.loads(dockerfile("ENTRYPOINT"))
    default_args = [] if "command" in CONTAINER else json.loads(dockerfile("CMD"))
    return entrypoint + CONTAINER.get("args", default_args)


def parsed_config():
    """The ConfigMap's file as the first pod reads it, with the StatefulSet's environment applied."""
    pod_name = f"{STATEFULSET['metadata']['name']}-0"
    environ = {}
    for name, entry in ENV.items():
        field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        environ[name] = pod_name if field == "metadata.name" else entry["value"]
    (text,) = CONFIGMAP["data"].values()
    raw = tomllib.loads(text)
    problems: list[str] = []
    apply_env_overrides(raw, environ, problems)
    config = parse_config(raw, problems)
    return config, problems


def test_every_manifest_parses_and_names_its_kind():
    """kubectl apply -f deploy/kubernetes/ takes every document; each needs apiVersion, kind and a name."""
    assert len(DOCUMENTS) == 4
    for document in DOCUMENTS:
        assert document["apiVersion"] and document["metadata"]["name"], document["kind"]


def test_instance_id_is_the_pod_name():
    """A stable, unique instance id per replica: a state directory and a transactional id that survive restarts."""
    assert ENV["SESSIONIZER__APP__INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_state_dir_is_the_per_pod_volume():
    """Local state on the pod's own claim survives a restart, so only the changelog tail is restored."""
    assert ENV["SESSIONIZER__APP__STATE_DIR"]["value"] == state_mount()


def test_config_map_with_the_environment_is_a_valid_config():
    """The service would start with this file and environment: no problems, standbys on, paths and ports agreeing."""
    config, problems = parsed_config()
    assert problems == []
    assert config.instance_id == "sessionizer-0"
    assert config.num_standby_replicas >= 1
    assert str(config.state_dir) == state_mount()
    assert config.bootstrap_servers == "kafka:9092"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_number(CONTAINER[probe]["httpGet"]["port"]) == config.http.port, probe


def test_probes_use_the_service_endpoints():
    """Readiness is /readyz (restored and processing), liveness /healthz (the loop goes round), on the http port."""
    paths = {probe: CONTAINER[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe")}
    assert paths == {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    assert set(paths.values()) <= ENDPOINTS.keys()
    assert {p["containerPort"] for p in CONTAINER["ports"]} == {int(dockerfile("EXPOSE"))}


def test_disruption_budget_covers_the_pods_one_at_a_time():
    """A drain takes at most one replica down while the other keeps processing."""
    labels = STATEFULSET["spec"]["template"]["metadata"]["labels"]
    assert PDB["spec"]["maxUnavailable"] == 1
    assert PDB["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert STATEFULSET["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_headless_service_governs_the_statefulset():
    """Each pod gets a stable DNS name through the governing headless Service."""
    assert SERVICE["spec"]["clusterIP"] == "None"
    assert STATEFULSET["spec"]["serviceName"] == SERVICE["metadata"]["name"]
    assert SERVICE["spec"]["selector"].items() <= STATEFULSET["spec"]["template"]["metadata"]["labels"].items()


def test_grace_period_covers_a_clean_shutdown():
    """SIGKILL before the final commit, leaving the group and closing the stores would redo work and delay failover."""
    assert POD["terminationGracePeriodSeconds"] >= 30


def test_enough_replicas_for_standbys():
    """A standby copy lives on another replica, so there must be one."""
    config, _ = parsed_config()
    assert STATEFULSET["spec"]["replicas"] >= max(2, 1 + config.num_standby_replicas)


def test_rollout_settings():
    """Pods start together (one group formation) and update one at a time, each ready before the next."""
    assert STATEFULSET["spec"]["podManagementPolicy"] == "Parallel"
    assert STATEFULSET["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_command_runs_the_mounted_config():
    """The container runs the image's command on the file the ConfigMap is mounted as."""
    run = command()
    assert run[:3] == [*json.loads(dockerfile("ENTRYPOINT")), "run", "--config"]
    (mount,) = [m for m in CONTAINER["volumeMounts"] if m["mountPath"] == run[3]]
    (volume,) = [v for v in POD["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == CONFIGMAP["metadata"]["name"]
    assert mount["subPath"] in CONFIGMAP["data"]


def test_runs_as_the_image_user_with_a_writable_volume():
    """runAsNonRoot needs the image user's numeric uid, and fsGroup makes the claim writable by it."""
    uid = int(re.search(r"useradd .*--uid (\d+)", DOCKERFILE).group(1))
    security = POD["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == uid
    assert security["fsGroup"]
