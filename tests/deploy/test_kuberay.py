"""helm/kuberay/rayjob-extract.yaml: a RayJob whose entrypoint sonovec's own CLI accepts as a Ray
extraction, whose workers request as many GPUs as they limit, and whose pods all mount the volume
that the shards are written to (the actors write, the driver consolidates)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from sonovec.server.cli import build_parser

pytestmark = pytest.mark.deploy

JOB = Path(__file__).resolve().parents[2] / "helm" / "kuberay" / "rayjob-extract.yaml"


def test_rayjob_entrypoint_is_a_ray_extraction_and_pods_share_the_data() -> None:
    job = yaml.safe_load(JOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["sonovec", "extract"]
    args = build_parser().parse_args(command[1:])
    assert args.engine == "ray" and args.address is None  # a RayJob driver finds its cluster itself
    assert args.ray_cpus is None
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [group["template"]["spec"] for group in cluster["workerGroupSpecs"]]
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert claims[mounts["/data"]] == "sonovec-archive"
            assert str(args.input).startswith("/data/") and str(args.output).startswith("/data/")
    for group in cluster["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            assert limits.get("nvidia.com/gpu") == requests.get("nvidia.com/gpu")
