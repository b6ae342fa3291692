"""``sonovec``: ``serve`` the API, ``extract`` embeddings from a folder in bulk, ``probe`` health.

Every ``Settings`` field is a flag here (``--max-wait-ms``) and an env var (``SONOVEC_MAX_WAIT_MS``);
its description is the help text.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sonovec.server.settings import Settings

log = logging.getLogger("sonovec")


def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type`` and extra kwargs for a settings field's annotation."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _flag_type(args[0])
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return str, {"choices": list(typing.get_args(annotation))}
    if annotation in (int, float, Path):
        return annotation, {}
    return str, {}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("service settings (also env SONOVEC_<NAME>)")
    for name, field in Settings.model_fields.items():
        kind, extra = _flag_type(field.annotation)
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(default)
        help_text = f"{field.description} [default: {default}]"
        if kind is not None:
            extra["type"] = kind
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=help_text, **extra)


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    given = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    try:
        return Settings(**{**overrides, **given})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"sonovec: invalid settings: {problems}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonovec", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="Serve REST (and gRPC) over the batched models.")
    add_settings_flags(serve)

    extract = commands.add_parser("extract", help="Embed every recording under a folder; resumable.")
    extract.add_argument("input", type=Path, help="Folder of recordings (searched recursively).")
    extract.add_argument("output", type=Path, help="Output folder (see docs/extract.md for its format).")
    extract.add_argument("--latents", action="store_true", help="Also write each recording's latent frames.")
    extract.add_argument("--pooling", choices=["mean", "mean_std"], default="mean")
    extract.add_argument(
        "--no-normalize", dest="normalize", action="store_false", help="Keep pooled vectors unnormalised."
    )
    extract.add_argument(
        "--fragment-seconds",
        type=float,
        default=None,
        help="Embed only this many seconds of each recording (as in the MAESTRO study).",
    )
    extract.add_argument(
        "--fragment-offset", type=float, default=0.0, help="Where the fragment starts, seconds."
    )
    extract.add_argument("--concurrency", type=int, default=8, help="Recordings decoded and queued at once.")
    extract.add_argument(
        "--extensions",
        default="wav,flac,ogg,mp3,opus,aiff,aif",
        help="Comma-separated file extensions to take.",
    )
    extract.add_argument("--no-progress", dest="progress", action="store_false", help="No progress bar.")
    add_engine_flags(extract)
    add_settings_flags(extract)

    plot = commands.add_parser("map", help="Picture of an extract folder's embedding space (PCA and t-SNE).")
    plot.add_argument("folder", type=Path, help="An output folder of 'sonovec extract'.")
    plot.add_argument("--png", type=Path, default=None, help="Where to write the picture [FOLDER/map.png].")
    plot.add_argument(
        "--label-depth",
        type=int,
        default=1,
        help="Label each recording by its first N folder names (e.g. the composer folder).",
    )

    add_index_parser(commands)

    probe = commands.add_parser(
        "probe", help="Exit 0 when the service is ready (container health check).", add_help=False
    )
    probe.add_argument("probe_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args))
    if args.command == "probe":
        from sonovec.server.probe import main as probe_main

        return probe_main(args.probe_args)
    if args.command == "map":
        return draw_map(args.folder, args.png or args.folder / "map.png", args.label_depth)
    if args.command == "serve":
        settings = settings_from(args)
        _configure_logging(settings.log_level)
        from sonovec.server.serve import serve

        asyncio.run(serve(settings))
        return 0
    settings = settings_from(args, grpc_port=0, max_wait_ms=20.0)
    _configure_logging(settings.log_level)
    from sonovec.server.extract import ExtractOptions, run_extract

    options = ExtractOptions(
        input=args.input,
        output=args.output,
        latents=args.latents,
        pooling=args.pooling,
        normalize=args.normalize,
        fragment_seconds=args.fragment_seconds,
        fragment_offset=args.fragment_offset,
        concurrency=args.concurrency,
        extensions=tuple(e.strip().lstrip(".").lower() for e in args.extensions.split(",")),
        progress=args.progress,
    )
    if args.engine == "ray":
        from sonovec.server.ray_extract import RayOptions, run_ray_extract

        ray_options = RayOptions(args.address, args.ray_cpus, args.actors, args.shard_files)
        return run_ray_extract(settings, options, ray_options)
    return asyncio.run(run_extract(settings, options))


def add_engine_flags(extract: argparse.ArgumentParser) -> None:
    """``--engine ray``: the same extraction on a Ray cluster (docs/ray.md)."""
    group = extract.add_argument_group("engine (docs/ray.md)")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process's batcher [default]; ray: a Ray cluster "
                       "(pip install 'sonovec[ray]').")
    group.add_argument("--address", default=None,
                       help="Ray cluster address (ray://host:10001, auto) [a new local one].")
    group.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray cluster [all].")
    group.add_argument("--actors", type=int, default=1, help="Embedding actors, one model each [1].")
    group.add_argument("--shard-files", type=int, default=64, help="Recordings per output shard [64].")


def add_index_parser(commands: Any) -> None:
    """``sonovec index build``: extract folders -> a read-only on-disk IVF-PQ collection."""
    index = commands.add_parser("index", help="Build large read-only collections offline (IVF-PQ on disk).")
    actions = index.add_subparsers(dest="index_command", required=True)
    build = actions.add_parser("build", help="Train, add shard by shard, merge lists on disk, register.")
    build.add_argument("inputs", nargs="+", type=Path, help="Extract folders (one embedding space).")
    build.add_argument("--name", required=True, help="The collection's name.")
    build.add_argument("--data-dir", type=Path, default=None,
                       help="The service's --data-dir; the index goes to DATA_DIR/indexes/NAME [./data].")
    build.add_argument("--factory", default="OPQ32,IVF4096,PQ32",
                       help="FAISS index_factory string of an IVF index [OPQ32,IVF4096,PQ32].")
    build.add_argument("--train-size", type=int, default=200_000, help="Vectors sampled to train [200000].")
    build.add_argument("--kmeans-iters", type=int, default=10, help="k-means iterations [10].")
    build.add_argument("--shard-rows", type=int, default=1_000_000, help="Rows per added shard [1000000].")
    build.add_argument("--workers", type=int, default=2, help="Processes adding shards in parallel [2].")
    build.add_argument("--nprobe", type=int, default=32, help="The collection's default nprobe [32].")
    build.add_argument("--rerank", type=int, default=30,
                       help="Re-score k x RERANK candidates exactly from the stored vectors [30].")
    build.add_argument("--no-progress", dest="progress", action="store_false", help="No progress bar.")
    build.set_defaults(handler=_index_build)


def _index_build(args: argparse.Namespace) -> int:
    _configure_logging("info")
    from sonovec.server.collections.index_build import build, options_from

    data_dir = args.data_dir or Settings.model_fields["data_dir"].default
    root = Path(data_dir) / "indexes"
    print(build(options_from(**{**vars(args), "inputs": tuple(args.inputs), "root": root})))
    return 0


def draw_map(folder: Path, png: Path, label_depth: int) -> int:
    import json

    import numpy as np

    from sonovec.server.plots import embedding_map_png

    vectors = np.load(folder / "embeddings.npy")
    paths = (folder / "paths.txt").read_text().split("\n")[: len(vectors)]
    labels = [
        "/".join(Path(p).parts[:label_depth]) if len(Path(p).parts) > label_depth else "(top)" for p in paths
    ]
    model = json.loads((folder / "model.json").read_text())
    title = f"{len(vectors)} recordings, {model['model']}, {model['pooling']} pooling"
    if not model["pretrained"]:
        title += " (RANDOM-INIT WEIGHTS)"
    png.write_bytes(embedding_map_png(vectors, labels, title))
    print(png)
    return 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
