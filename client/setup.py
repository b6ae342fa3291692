"""Build hook: generate ``sonovec.v1`` (messages, stubs, type stubs) from the proto contract, and
``sonovec.inference`` from the Open Inference Protocol's ``proto/inference`` (package ``inference``:
its Python modules live under ``sonovec.`` so that they cannot collide with another distribution's
top-level ``inference`` package).

The ``.proto`` files live once, in ``../proto`` (an sdist carries a copy in ``_proto``). The code is
generated into ``sonovec/v1`` of this source tree (git-ignored) before packages are collected, so a
wheel (``pip install ./client``) and an editable install (``pip install -e ./client``) both get it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "sonovec" / "v1"
INFERENCE = HERE / "sonovec" / "inference"


def proto_root() -> Path:
    for root in (HERE.parent / "proto", HERE / "_proto"):
        if (root / "sonovec" / "v1").is_dir():
            return root
    raise FileNotFoundError("sonovec-client needs the proto contract in ../proto (or _proto in an sdist)")


_generated = False


def generate() -> None:
    """Run protoc (from grpcio-tools) on every sonovec/v1/*.proto into sonovec/v1/ (once per build)."""
    global _generated
    if _generated:
        return
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise RuntimeError("building sonovec-client needs grpcio-tools (a build requirement)") from exc
    import grpc_tools

    root = proto_root()
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    protos = sorted(str(p.relative_to(root)) for p in (root / "sonovec" / "v1").glob("*.proto"))
    PACKAGE.mkdir(parents=True, exist_ok=True)
    out = str(HERE)
    args = [
        "protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    (PACKAGE / "__init__.py").write_text('"""Generated from proto/sonovec/v1 by the build; do not edit."""\n')
    (PACKAGE / "py.typed").write_text("")
    _generate_inference(protoc, root, well_known)
    _generated = True


def _generate_inference(protoc: object, root: Path, well_known: Path) -> None:
    """proto/inference/*.proto -> sonovec/inference/*_pb2*.py: the files are laid under
    ``sonovec/inference/`` in a scratch include root, so the generated imports are
    ``sonovec.inference.*`` while the protobuf package stays ``inference`` (what the protocol's
    clients call)."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "sonovec" / "inference"
        tree.mkdir(parents=True)
        for proto in (root / "inference").glob("*.proto"):
            shutil.copy(proto, tree / proto.name)
        protos = sorted(str(p.relative_to(scratch)) for p in tree.glob("*.proto"))
        INFERENCE.mkdir(parents=True, exist_ok=True)
        out = str(HERE)
        args = ["protoc", f"-I{scratch}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}"]
        if protoc.main([*args, f"--grpc_python_out={out}", *protos]) != 0:  # type: ignore[attr-defined]
            raise RuntimeError(f"protoc failed on {protos}")
    note = '"""Generated from proto/inference (the Open Inference Protocol) by the build; do not edit."""\n'
    (INFERENCE / "__init__.py").write_text(note)
    (INFERENCE / "py.typed").write_text("")


class GenerateProto(Command):
    """``python setup.py generate_proto``: regenerate sonovec/v1 by hand."""

    description = "generate sonovec.v1 from the .proto files"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        generate()


# egg_info lists the packages' files (and fails on a missing package directory) before build_py
# runs, for wheels, editable installs and sdists alike: both generate first.
class EggInfo(egg_info):
    def run(self) -> None:
        generate()
        super().run()


class BuildPy(build_py):
    def run(self) -> None:
        generate()
        super().run()


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        shutil.copytree(proto_root(), Path(base_dir) / "_proto", dirs_exist_ok=True)


setup(cmdclass={"egg_info": EggInfo, "build_py": BuildPy, "sdist": Sdist, "generate_proto": GenerateProto})
