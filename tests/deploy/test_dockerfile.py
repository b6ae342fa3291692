"""The Dockerfile: hadolint, and the facts the chart and the server rely on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from sonovec.server.settings import Settings

from .conftest import CHART, ROOT, DeployTools


def _chart_values() -> dict:
    import yaml  # PyYAML arrives with kubernetes-validate (scripts/deploy-tools.sh)

    return yaml.safe_load((CHART / "values.yaml").read_text())


pytestmark = pytest.mark.deploy

DOCKERFILE = ROOT / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    result = []
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            current = []
            stages[instruction[1].split()[-1]] = current
        current.append(instruction)
    return stages


def _runtime() -> list[tuple[str, str]]:
    return list(_stages().values())[-1]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def _arg_defaults(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(args.split("=", 1) for word, args in stage if word == "ARG" and "=" in args)


def test_hadolint_clean(deploy_tools: DeployTools) -> None:
    done = subprocess.run(
        [str(deploy_tools.hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_runs_as_numeric_non_root_user(deploy_tools: DeployTools) -> None:
    runtime = _runtime()
    (user,) = [args for word, args in runtime if word == "USER"]
    for name, value in _arg_defaults(runtime).items():
        user = user.replace("${" + name + "}", value).replace("$" + name, value)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, user
    assert gid.isdigit() and int(gid) > 0, user
    values = _chart_values()
    assert values["securityContext"]["runAsUser"] == int(uid), "chart and image should agree on the user"


def test_refuses_random_weights_and_listens_everywhere() -> None:
    env = _env(_runtime())
    assert env["SONOVEC_ALLOW_RANDOM_WEIGHTS"] == "false"
    assert env["SONOVEC_HOST"] == "0.0.0.0"
    assert env["SONOVEC_WEIGHTS"] == "/weights"
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("SONOVEC_"):
            assert name.removeprefix("SONOVEC_").lower() in fields, f"{name} is no server setting"


def test_ports_match_settings_and_chart(deploy_tools: DeployTools) -> None:
    runtime = _runtime()
    env = _env(runtime)
    exposed = {int(p.split("/")[0]) for word, args in runtime if word == "EXPOSE" for p in args.split()}
    defaults = Settings.model_fields
    assert int(env["SONOVEC_PORT"]) == defaults["port"].default
    assert int(env["SONOVEC_GRPC_PORT"]) == defaults["grpc_port"].default
    ports = _chart_values()["ports"]
    assert exposed == {
        int(env["SONOVEC_PORT"]),
        int(env["SONOVEC_GRPC_PORT"]),
        int(env["SONOVEC_METRICS_PORT"]),
    }
    assert exposed == set(ports.values())


def test_healthcheck_uses_the_shipped_health_command() -> None:
    (healthcheck,) = [args for word, args in _runtime() if word == "HEALTHCHECK"]
    command = healthcheck.replace('", "', " ")
    assert "sonovec.server.health" in command or "sonovec health" in command


def test_dependencies_install_before_the_code() -> None:
    runtime = [f"{word} {args}" for word, args in _runtime()]
    torch = next(i for i, line in enumerate(runtime) if "torch==" in line)
    deps = next(i for i, line in enumerate(runtime) if "pip install -r" in line)
    code = next(i for i, line in enumerate(runtime) if line.startswith("COPY --from=wheels"))
    assert torch < deps < code
    copies_before_deps = [line for line in runtime[:deps] if line.startswith("COPY")]
    assert all("pyproject.toml" in line for line in copies_before_deps), copies_before_deps


def test_variant_and_base_are_build_args() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert re.search(r"^ARG WEIGHTS=none$", text, re.M), "weights are downloaded only when asked"


def test_no_secrets_in_the_image() -> None:
    for word, args in _instructions(DOCKERFILE.read_text()):
        if word in ("ARG", "ENV"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEYS?)\b", args, re.I), args


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    assert "*" in patterns, "allow-list: everything is ignored unless named"
    assert {"!models/", "!client/", "!service/"} <= set(patterns)
    assert not any(p.startswith("!") and (".git" in p or ".cache" in p) for p in patterns)


def test_source_files_are_in_the_context() -> None:
    # Every folder the Dockerfile copies is allowed by .dockerignore.
    allowed = {p[1:].rstrip("/") for p in (ROOT / ".dockerignore").read_text().split() if p.startswith("!")}
    for word, args in _instructions(DOCKERFILE.read_text()):
        if word == "COPY" and not args.startswith("--from"):
            source = Path(args.split()[0]).parts[0]
            assert source in allowed, f"COPY {source} is excluded by .dockerignore"
