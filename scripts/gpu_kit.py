"""What goes into the GPU kit (``scripts/gpu-kit.sh``), and whether a built kit is complete.

The kit is a folder of wheels that installs the project with ``pip install --no-index`` on a machine
without network. Which third-party wheels it needs is the closure of the project's requirements
(the three distributions installed in this checkout's venv, with the ``torch`` and ``onnx`` extras,
plus the test tools of ``requirements-dev.txt``), walked through the installed packages' metadata
with the *target* Python's markers, and cut where the target already provides a package:

    gpu   the GPU machine (``benchmarks/gpu.sh``): its image holds torch 2.11, numpy, onnx,
          onnxruntime, matplotlib, scikit-learn, pytest and ~190 more (``MACHINE`` below, as listed
          in the device notes). Those stay out, except ``BRING``: the generated gRPC code needs
          grpcio >= 1.85.1 and protobuf >= 7.35.1 at run time and the machine's versions are
          unknown, so the kit carries them and gpu.sh puts the kit first on the path.
    full  a clean venv holding only torch (how this script is tested here): everything but torch
          and torch's own requirements.

Versions are the ones installed here (what the tests here ran on).

    python scripts/gpu_kit.py plan --python 3.12.3 --mode gpu     # NAME==VERSION, one a line
    python scripts/gpu_kit.py check .gpu-kit --python 3.12.3 --mode gpu
    python scripts/gpu_kit.py machine /tmp/kit-full    # what of a --full kit the GPU machine has

``check`` reads the built wheels' own metadata: one version per name, tags installable on the
target, every requirement met inside the kit (version included) or by what the target provides.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"sonovec-models": {"torch", "onnx"}, "sonovec-client": set(), "sonovec-server": set()}
# In requirements-dev.txt, but not for the GPU run (gpu.sh runs the CUDA tests and the benchmarks):
# lint tools, and the tools of the browser, schema-fuzz and file-format tests.
LINT_TOOLS = {"ruff", "mypy", "import-linter", "schemathesis", "selenium", "pyarrow", "pandas", "safetensors",
              "ray"}
# The GPU machine's image ("Python packages already there", /work/.library/device/KINDS.md, 2026-11-17).
MACHINE = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
BRING = {"grpcio", "protobuf"}


def canon(name: str) -> str:
    return str(canonicalize_name(name))


def environment(python: str) -> dict[str, str]:
    """Marker variables of CPython ``python`` (X.Y.Z) on Linux x86_64."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    short = ".".join(python.split(".")[:2])
    env.update(python_version=short, python_full_version=python, sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def applicable(lines: list[str], extras: set[str], env: dict[str, str]) -> list[Requirement]:
    """The Requires-Dist lines that apply on the target with these extras requested."""
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def torch_closure(env: dict[str, str]) -> set[str]:
    """torch and what it requires (installed with it, before the kit)."""
    seen, todo = set(), ["torch"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            lines = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [canon(r.name) for r in applicable(lines, set(), env)]
    return seen


def provided(mode: str, env: dict[str, str]) -> set[str]:
    """Names the target has before the kit is installed."""
    have = torch_closure(env)
    if mode == "gpu":
        have |= {canon(n) for n in MACHINE.split()} - BRING
    return have


def roots() -> list[tuple[str, set[str]]]:
    dev = []
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and canon(Requirement(line).name) not in LINT_TOOLS:
            req = Requirement(line)
            dev.append((canon(req.name), set(req.extras)))
    return [(name, extras) for name, extras in PROJECT.items()] + dev


def plan(python: str, mode: str) -> dict[str, str | None]:
    """Third-party name -> version installed here (None: not installed here), for the kit."""
    env = environment(python)
    have = provided(mode, env)
    wanted: dict[str, set[str]] = {}
    todo = roots()
    while todo:
        name, extras = todo.pop()
        if name in have or (name in wanted and extras <= wanted[name]):
            continue
        wanted[name] = wanted.get(name, set()) | extras
        try:
            lines = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(canon(r.name), set(r.extras)) for r in applicable(lines, wanted[name], env)]
    out: dict[str, str | None] = {}
    for name in sorted(set(wanted) - set(PROJECT)):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---- check a built kit ------------------------------------------------------------------------------


def wheel_metadata(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        message = Parser().parsestr(wheel.read(name).decode())
    return message.get_all("Requires-Dist") or []


def target_tags(python: str) -> set:
    major, minor = (int(x) for x in python.split(".")[:2])
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(17, 40)] + ["manylinux2014_x86_64", "linux_x86_64"]
    tags = set(cpython_tags((major, minor), platforms=platforms))
    return tags | set(compatible_tags((major, minor), f"cp{major}{minor}", platforms))


def read_kit(kit: Path, tags: set) -> tuple[dict[str, Version], dict[str, list[str]], list[str]]:
    """Each wheel's name -> version and Requires-Dist lines; problems of the files themselves."""
    versions: dict[str, Version] = {}
    requires: dict[str, list[str]] = {}
    problems = []
    for path in sorted(kit.glob("*.whl")):
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        if name in versions:
            problems.append(f"two versions of {name}: {versions[name]} and {version}")
        if not wheel_tags & tags:
            problems.append(f"{path.name}: no tag installable on this CPython, manylinux x86_64")
        versions[name], requires[name] = version, wheel_metadata(path)
    return versions, requires, problems


def requested_extras(requires: dict[str, list[str]], env: dict[str, str]) -> dict[str, set[str]]:
    """The extras each package is asked for: the roots', then what requirements ask (redis[hiredis])."""
    extras: dict[str, set[str]] = {}
    for name, wanted in roots():
        extras.setdefault(name, set()).update(wanted)
    changed = True
    while changed:
        changed = False
        for name, lines in requires.items():
            for req in applicable(lines, extras.get(name, set()), env):
                target = extras.setdefault(canon(req.name), set())
                if not set(req.extras) <= target:
                    target.update(req.extras)
                    changed = True
    return extras


def check(kit: Path, python: str, mode: str) -> list[str]:
    """Problems of the kit for the target (empty: complete)."""
    env = environment(python)
    have = provided(mode, env)
    versions, requires, problems = read_kit(kit, target_tags(python))
    extras = requested_extras(requires, env)
    problems += [f"{name}: a root requirement, neither in the kit nor on the target"
                 for name, _ in roots() if name not in versions and name not in have]
    for name, lines in requires.items():
        for req in applicable(lines, extras.get(name, set()), env):
            dep = canon(req.name)
            if dep in versions and not req.specifier.contains(versions[dep], prereleases=True):
                problems.append(f"{name} needs {req}; the kit has {dep} {versions[dep]}")
            elif dep not in versions and dep not in have:
                problems.append(f"{name} needs {req}: neither in the kit nor on the target")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["plan", "check", "machine"],
                        help="plan: the third-party list; check: a built kit; machine: the kit's packages "
                        "that the GPU machine already has (to imitate it in a venv here)")
    parser.add_argument("kit", nargs="?", type=Path, help="The kit folder (check).")
    parser.add_argument("--python", default="3.12.3", help="Target CPython X.Y.Z (the GPU machine's).")
    parser.add_argument("--mode", choices=["gpu", "full"], default="gpu")
    args = parser.parse_args()
    if args.command == "plan":
        for name, version in plan(args.python, args.mode).items():
            print(f"{name}=={version}" if version else name)
        return 0
    if args.kit is None:
        parser.error(f"{args.command} needs the kit folder")
    if args.command == "machine":
        on_machine = {canon(n) for n in MACHINE.split()} - BRING
        names = {str(parse_wheel_filename(p.name)[0]) for p in args.kit.glob("*.whl")}
        print("\n".join(sorted(names & on_machine)))
        return 0
    problems = check(args.kit, args.python, args.mode)
    for problem in problems:
        print(f"gpu_kit check: {problem}", file=sys.stderr)
    assumed = sorted(provided(args.mode, environment(args.python)))
    (args.kit / "manifest.json").write_text(json.dumps(
        {"python": args.python, "mode": args.mode, "bring_although_present": sorted(BRING),
         "target_provides": assumed, "problems": problems}, indent=1))
    print(f"gpu_kit check: {len(list(args.kit.glob('*.whl')))} wheels, "
          f"{'complete' if not problems else f'{len(problems)} problem(s)'} for CPython {args.python} "
          f"({args.mode})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
