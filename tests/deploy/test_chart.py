"""The Helm chart: lint, render, validate against Kubernetes schemas, and check what schemas cannot see.

Every example values file must lint (--strict), render and validate; every file in
helm/examples/broken/ must be refused. The rendered manifests are then read as data for the
properties no JSON schema expresses: GPU limit == request, probe paths and ports, non-root,
ports that agree with the server's settings, one autoscaler at most.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sonovec.server.settings import Settings

from .conftest import CHART, EXAMPLES, KUBERNETES_VERSION, DeployTools

pytestmark = pytest.mark.deploy

GOOD = sorted(EXAMPLES.glob("values-*.yaml"))
BROKEN = sorted((EXAMPLES / "broken").glob("*.yaml"))
RELEASE, NAMESPACE = "sonovec", "sonovec"

Manifest = dict[str, Any]


def _run(command: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120, check=False)


def _template(tools: DeployTools, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return _run([tools.helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args])


_rendered: dict[tuple[str, ...], list[Manifest]] = {}


def render(tools: DeployTools, *args: str | Path) -> list[Manifest]:
    """Rendered manifests for these helm arguments (memoised: helm runs once per combination)."""
    key = tuple(str(a) for a in args)
    if key not in _rendered:
        import yaml  # PyYAML arrives with kubernetes-validate, installed by the deploy_tools fixture

        done = _template(tools, *args)
        assert done.returncode == 0, done.stderr
        _rendered[key] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return _rendered[key]


def kinds(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def server_deployment(manifests: list[Manifest]) -> Manifest:
    (deployment,) = [
        m
        for m in kinds(manifests, "Deployment")
        if m["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    return deployment


def server_container(manifests: list[Manifest]) -> Manifest:
    (container,) = [
        c
        for c in server_deployment(manifests)["spec"]["template"]["spec"]["containers"]
        if c["name"] == "sonovec"
    ]
    return container


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_specs(manifests: list[Manifest]) -> Iterator[Manifest]:
    for deployment in kinds(manifests, "Deployment"):
        yield deployment["spec"]["template"]["spec"]


@pytest.fixture(params=GOOD, ids=lambda p: p.name)
def example(request: pytest.FixtureRequest) -> Path:
    return request.param


# --- lint, render, validate ---------------------------------------------------------------------


def test_examples_exist() -> None:
    assert {p.name for p in GOOD} >= {"values-cpu.yaml", "values-gpu.yaml", "values-autoscaled.yaml"}
    assert len(BROKEN) >= 3


def test_lint_strict(deploy_tools: DeployTools, example: Path) -> None:
    done = _run([deploy_tools.helm, "lint", "--strict", CHART, "--namespace", NAMESPACE, "-f", example])
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendered_manifests_validate(deploy_tools: DeployTools, example: Path, tmp_path: Path) -> None:
    done = _template(deploy_tools, "-f", example)
    assert done.returncode == 0, done.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(done.stdout)
    checked = _run(
        [
            deploy_tools.kubernetes_validate,
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--no-warn",
            rendered,
        ]
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    manifests = render(deploy_tools, "-f", example)
    built_in = [m for m in manifests if m["kind"] not in CRD_SCHEMAS]
    assert checked.stdout.count(" passed for resource ") == len(built_in), checked.stdout


# kubernetes-validate knows no CRDs: check the two this chart renders against their required shape.
_STR = {"type": "string", "minLength": 1}
_TARGET = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _STR, "kind": {"const": "Deployment"}, "apiVersion": {"const": "apps/v1"}},
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": _TARGET,
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer"},
                    "cooldownPeriod": {"type": "integer"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": _STR,
                                "metricType": {"enum": ["Utilization", "AverageValue", "Value"]},
                                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": _STR,
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_custom_resources_have_their_shape(deploy_tools: DeployTools, example: Path) -> None:
    import jsonschema  # a dependency of kubernetes-validate, installed by the deploy_tools fixture

    manifests = render(deploy_tools, "-f", example)
    for manifest in manifests:
        if manifest["kind"] in CRD_SCHEMAS:
            jsonschema.validate(manifest, CRD_SCHEMAS[manifest["kind"]])
    monitors = kinds(manifests, "ServiceMonitor")
    services = kinds(manifests, "Service")
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matched) == 1, "the ServiceMonitor must select exactly the server Service"
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


@pytest.mark.parametrize("broken", BROKEN, ids=lambda p: p.name)
def test_broken_values_are_refused(deploy_tools: DeployTools, broken: Path) -> None:
    lint = _run([deploy_tools.helm, "lint", "--strict", CHART, "-f", broken])
    assert lint.returncode != 0, f"helm lint accepted {broken.name}:\n{lint.stdout}"
    template = _template(deploy_tools, "-f", broken)
    assert template.returncode != 0, f"helm template accepted {broken.name}"
    assert "values don't meet the specifications of the schema" in template.stderr, template.stderr


# --- what the schemas cannot see ----------------------------------------------------------------


def test_gpu_limit_equals_request(deploy_tools: DeployTools, example: Path) -> None:
    for spec in pod_specs(render(deploy_tools, "-f", example)):
        for container in spec.get("initContainers", []) + spec["containers"]:
            resources = container.get("resources", {})
            limits, requests = resources.get("limits", {}), resources.get("requests", {})
            for name in set(limits) | set(requests):
                if "gpu" in name:
                    assert limits.get(name) == requests.get(name), (
                        f"{container['name']}: {name} limit != request"
                    )


def test_gpu_example_lands_on_gpu_nodes(deploy_tools: DeployTools) -> None:
    manifests = render(deploy_tools, "-f", EXAMPLES / "values-gpu.yaml")
    container = server_container(manifests)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert env_of(container)["SONOVEC_DEVICE"] == "cuda"
    pod = server_deployment(manifests)["spec"]["template"]["spec"]
    assert pod["nodeSelector"], "GPU pods need a node selector"
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    cpu = server_container(render(deploy_tools, "-f", EXAMPLES / "values-cpu.yaml"))
    assert not any("gpu" in k for k in cpu["resources"].get("limits", {}))


def test_probes_use_health_routes_on_the_rest_port(deploy_tools: DeployTools, example: Path) -> None:
    container = server_container(render(deploy_tools, "-f", example))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {
        "startupProbe": "/v1/health/ready",
        "readinessProbe": "/v1/health/ready",
        "livenessProbe": "/v1/health/live",
    }
    for probe, path in expected.items():
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        port = ports.get(http_get["port"], http_get["port"])
        assert port == int(env_of(container)["SONOVEC_PORT"]), f"{probe} probes port {port}"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, (
        "the startup probe must allow model load"
    )


def _assert_restricted(manifests: list[Manifest]) -> None:
    for spec in pod_specs(manifests):
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        writable = {
            m["mountPath"]
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
            if not m.get("readOnly")
        }
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = {**pod_sc, **container.get("securityContext", {})}
            who = container["name"]
            assert sc.get("runAsNonRoot") is True, who
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, (
                f"{who}: numeric non-root user"
            )
            assert sc.get("allowPrivilegeEscalation") is False, who
            assert sc.get("readOnlyRootFilesystem") is True, who
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], who
            assert not sc.get("capabilities", {}).get("add"), who
            assert not sc.get("privileged"), who
        assert "/tmp" in writable, "a read-only root needs a writable /tmp"
        assert not any("hostPath" in v for v in spec.get("volumes", []))


def test_restricted_pod_security(deploy_tools: DeployTools, example: Path) -> None:
    _assert_restricted(render(deploy_tools, "-f", example))


def test_restricted_pod_security_with_everything_on(deploy_tools: DeployTools) -> None:
    everything = [
        "redis.bundled.enabled=true",
        "weights.source=initContainer",
        "networkPolicy.enabled=true",
        "autoscaling.enabled=true",
        "metrics.serviceMonitor.enabled=true",
    ]
    manifests = render(
        deploy_tools, "--set", "image.repository=r/s", *[a for s in everything for a in ("--set", s)]
    )
    assert len(kinds(manifests, "Deployment")) == 2
    _assert_restricted(manifests)


def test_ports_agree_with_settings(deploy_tools: DeployTools, example: Path) -> None:
    manifests = render(deploy_tools, "-f", example)
    container = server_container(manifests)
    env = env_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    defaults = Settings.model_fields
    assert ports["http"] == defaults["port"].default == int(env["SONOVEC_PORT"])
    assert ports["grpc"] == defaults["grpc_port"].default == int(env["SONOVEC_GRPC_PORT"])
    assert ports["metrics"] == int(env["SONOVEC_METRICS_PORT"]) > 0
    assert env["SONOVEC_HOST"] == "0.0.0.0"
    (service,) = [
        s
        for s in kinds(manifests, "Service")
        if s["metadata"]["name"] == server_deployment(manifests)["metadata"]["name"]
    ]
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports, f"Service port {port['name']} targets no container port"
        assert port["port"] == ports[port["targetPort"]]


def test_every_env_var_is_a_setting(deploy_tools: DeployTools, example: Path) -> None:
    env = env_of(server_container(render(deploy_tools, "-f", example)))
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("SONOVEC_"):
            assert name.removeprefix("SONOVEC_").lower() in fields, f"{name} is no server setting"
    assert env["SONOVEC_ALLOW_RANDOM_WEIGHTS"] == "false"
    Settings.model_validate(
        {
            k.removeprefix("SONOVEC_").lower(): v
            for k, v in env.items()
            if k.startswith("SONOVEC_") and isinstance(v, str)
        }
    )


def test_weights_are_mounted_read_only(deploy_tools: DeployTools, example: Path) -> None:
    manifests = render(deploy_tools, "-f", example)
    container = server_container(manifests)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    weights_path = env_of(container)["SONOVEC_WEIGHTS"]
    assert mounts[weights_path].get("readOnly") is True
    volumes = {v["name"]: v for v in server_deployment(manifests)["spec"]["template"]["spec"]["volumes"]}
    volume = volumes[mounts[weights_path]["name"]]
    if "persistentVolumeClaim" in volume:
        assert volume["persistentVolumeClaim"]["readOnly"] is True


def test_weights_sources(deploy_tools: DeployTools) -> None:
    base = ["--set", "image.repository=r/s"]
    pvc = server_deployment(render(deploy_tools, *base))["spec"]["template"]["spec"]
    assert "initContainers" not in pvc
    init = server_deployment(render(deploy_tools, *base, "--set", "weights.source=initContainer"))["spec"][
        "template"
    ]["spec"]
    (fetch,) = init["initContainers"]
    assert {m["name"] for m in fetch["volumeMounts"]} >= {"weights"}
    baked = server_container(render(deploy_tools, *base, "--set", "weights.source=image"))
    assert all(m["name"] != "weights" for m in baked["volumeMounts"])
    assert env_of(baked)["SONOVEC_WEIGHTS"] == "/weights"


def test_one_autoscaler_at_most(deploy_tools: DeployTools, example: Path) -> None:
    manifests = render(deploy_tools, "-f", example)
    autoscalers = kinds(manifests, "HorizontalPodAutoscaler") + kinds(manifests, "ScaledObject")
    assert len(autoscalers) <= 1
    if autoscalers:
        assert "replicas" not in server_deployment(manifests)["spec"], "the autoscaler owns the replica count"


def test_autoscaled_example_scales_on_queue_depth(deploy_tools: DeployTools) -> None:
    manifests = render(deploy_tools, "-f", EXAMPLES / "values-autoscaled.yaml")
    (scaled,) = kinds(manifests, "ScaledObject")
    assert not kinds(manifests, "HorizontalPodAutoscaler")
    assert scaled["spec"]["scaleTargetRef"]["name"] == server_deployment(manifests)["metadata"]["name"]
    (prometheus,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    assert "sonovec_queue_depth_seconds" in prometheus["metadata"]["query"]
    assert float(prometheus["metadata"]["threshold"]) > 0
    assert kinds(manifests, "ServiceMonitor"), "KEDA's Prometheus needs the pods scraped"


def test_hpa_without_keda(deploy_tools: DeployTools) -> None:
    manifests = render(deploy_tools, "--set", "image.repository=r/s", "--set", "autoscaling.enabled=true")
    (hpa,) = kinds(manifests, "HorizontalPodAutoscaler")
    assert not kinds(manifests, "ScaledObject")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_bundled_redis_is_wired(deploy_tools: DeployTools) -> None:
    manifests = render(deploy_tools, "-f", EXAMPLES / "values-cpu.yaml")
    env = env_of(server_container(manifests))
    redis_services = [
        s
        for s in kinds(manifests, "Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    ]
    (redis,) = redis_services
    assert env["SONOVEC_REDIS_URL"] == f"redis://{redis['metadata']['name']}:6379/0"
    external = env_of(server_container(render(deploy_tools, "-f", EXAMPLES / "values-autoscaled.yaml")))
    assert external["SONOVEC_REDIS_URL"].startswith("redis://")


def test_pdb_selects_the_server_pods(deploy_tools: DeployTools, example: Path) -> None:
    manifests = render(deploy_tools, "-f", example)
    (pdb,) = kinds(manifests, "PodDisruptionBudget")
    labels = server_deployment(manifests)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
