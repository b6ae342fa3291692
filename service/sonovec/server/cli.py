"""The ``sonovec`` command: ``serve``, ``extract``, ``map`` and ``health``, each with its own flags.

Every ``Settings`` field is a flag of ``serve`` (``--max-wait-ms``) and an env var
(``SONOVEC_MAX_WAIT_MS``); its description is the help text. ``extract`` takes only the settings
that matter to extraction. ``health`` is answered without importing the service (it is what a
container health check runs every few seconds).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sonovec.server import health

if TYPE_CHECKING:
    from sonovec.server.settings import Settings

log = logging.getLogger("sonovec")

DESCRIPTION = "sonovec: EnCodec embeddings, codes and similarity over REST and gRPC, and bulk tools."
EPILOG = """examples:
  sonovec serve --weights random              the API on 127.0.0.1:8000 (docs at /docs)
  sonovec extract recordings/ out/ --model encodec_24khz
  sonovec map out/                            PCA and t-SNE picture of out/ (out/map.png)
  sonovec health --live                       exit 0 when the local server is alive

Each command has its own --help."""

HEALTH_COMMANDS = ("health", "probe")  # "probe" is the old name, kept as an alias

# The settings that change what or how `sonovec extract` computes; the rest are the server's.
EXTRACT_SETTINGS = (
    "backend",
    "weights",
    "allow_random_weights",
    "device",
    "precision",
    "threads",
    "workers",
    "max_batch_seconds",
    "max_wait_ms",
    "max_queue_seconds",
    "request_timeout_s",
    "max_request_bytes",
    "max_audio_seconds",
    "max_channels",
    "data_dir",
    "log_level",
)
# Where extract's defaults differ from the server's (a flag or SONOVEC_<NAME> still wins). Its
# deadline is a day, not 300 s: recordings queued behind long ones wait longer than a client would.
EXTRACT_DEFAULTS: dict[str, Any] = {"grpc_port": 0, "max_wait_ms": 20.0, "request_timeout_s": 86400.0}

# Help where the server's wording (requests, clients, 429) would mislead in extract.
EXTRACT_HELP = {
    "max_queue_seconds": "Audio seconds queued at most (a memory bound); a recording that does not fit "
    "waits its turn.",
    "request_timeout_s": "Deadline of one recording, from decoding to its vector; past it the recording "
    "fails (errors.jsonl).",
    "max_request_bytes": "Largest recording file, in bytes (a fragment: its decoded float32 samples).",
    "max_audio_seconds": "Longest recording (or fragment), in seconds; longer ones are refused.",
    "data_dir": "Where the ONNX backend caches its exported graphs (under models/).",
}


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


def add_settings_flags(
    parser: argparse.ArgumentParser,
    names: Iterable[str] | None = None,
    defaults: dict[str, Any] | None = None,
    helps: dict[str, str] | None = None,
) -> None:
    """A flag for each named settings field (all of them by default), help from its description."""
    from sonovec.server.settings import Settings

    group = parser.add_argument_group("settings (also env SONOVEC_<NAME>)")
    fields = Settings.model_fields
    for name in names or fields:
        field = fields[name]
        kind, extra = _flag_type(field.annotation)
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        default = (defaults or {}).get(name, default)
        if isinstance(default, list):
            default = ",".join(default)
        help_text = f"{(helps or {}).get(name, field.description)} [default: {default}]"
        if kind is not None:
            extra["type"] = kind
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=help_text, **extra)


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    from pydantic import ValidationError

    from sonovec.server.settings import Settings

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


def version_text() -> str:
    """``sonovec 0.1.0 (sonovec-models 0.1.0, sonovec-client 0.1.0)``, from the installed distributions."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"sonovec {of('sonovec-server')} (sonovec-models {of('sonovec-models')}, " + (
        f"sonovec-client {of('sonovec-client')})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sonovec",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="Serve the REST API (and gRPC) over the batched models.",
        description="Serve the REST API (and gRPC) over the batched models until SIGTERM, then drain.",
    )
    add_settings_flags(serve)
    _add_extract(commands)
    _add_map(commands)
    add_index_parser(commands)
    add_compare_parser(commands)
    check = commands.add_parser(
        "health",
        aliases=["probe"],
        help="Exit 0 when the local server is ready (--live: alive); for health checks. Alias: probe.",
        description=health.DESCRIPTION + " 'sonovec probe' is an alias (the command's old name).",
    )
    health.add_arguments(check)
    return parser


def _add_extract(commands: Any) -> None:
    from sonovec.models.registry import MODEL_SPECS

    extract = commands.add_parser(
        "extract",
        help="Embed every recording under a folder into an output folder; resumable.",
        description="Embed every recording under INPUT with one model, into OUTPUT "
        "(format, resuming and errors: docs/extract.md). Only the chosen model is loaded.",
    )
    extract.add_argument("input", type=Path, help="Folder of recordings (searched recursively).")
    extract.add_argument("output", type=Path, help="Output folder (see docs/extract.md for its format).")
    extract.add_argument(
        "--model",
        choices=list(MODEL_SPECS),
        default=None,
        help="The model to embed with; the only one loaded [default: the first of SONOVEC_MODELS, "
        "encodec_48khz].",
    )
    extract.add_argument("--latents", action="store_true", help="Also write each recording's latent frames.")
    extract.add_argument(
        "--pooling", choices=["mean", "mean_std"], default="mean", help="How frames become one vector."
    )
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
        help="Comma-separated file extensions to take; other files are counted and reported.",
    )
    extract.add_argument("--no-progress", dest="progress", action="store_false", help="No progress bar.")
    extract.add_argument(
        "--format",
        choices=["npy", "parquet", "safetensors"],
        default="npy",
        help="Also write the embeddings as sharded Parquet or safetensors (docs/extract.md, Formats).",
    )
    add_engine_flags(extract)
    add_settings_flags(extract, EXTRACT_SETTINGS, EXTRACT_DEFAULTS, EXTRACT_HELP)


def _add_map(commands: Any) -> None:
    plot = commands.add_parser(
        "map",
        help="Draw an extract folder's embedding space (PCA and t-SNE) as a PNG.",
        description="Draw the embeddings of a 'sonovec extract' output folder, PCA and t-SNE side by "
        "side, coloured by folder.",
    )
    plot.add_argument("folder", type=Path, help="An output folder of 'sonovec extract'.")
    plot.add_argument("--png", type=Path, default=None, help="Where to write the picture [FOLDER/map.png].")
    plot.add_argument("--html", type=Path, default=None,
                      help="Write DIR/map.html instead: the interactive map, one self-contained file.")
    plot.add_argument(
        "--label-depth",
        type=int,
        default=1,
        help="Label each recording by its first N folder names (e.g. the composer folder).",
    )
    plot.add_argument("--pca", type=int, default=50, help="PCA components before t-SNE / UMAP.")
    plot.add_argument("--perplexity", type=float, default=None, help="t-SNE perplexity [min(30, (N-1)/3)].")
    plot.add_argument("--method", choices=["tsne", "umap"], default="tsne", help="umap needs umap-learn.")


def _health(argv: Sequence[str]) -> int:
    """``sonovec health ...`` without building the other commands (no pydantic, no numpy)."""
    parser = argparse.ArgumentParser(prog=f"sonovec {argv[0]}", description=health.DESCRIPTION)
    health.add_arguments(parser)
    return health.run(parser.parse_args(argv[1:]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in HEALTH_COMMANDS:
        return _health(argv)
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args))
    if args.command == "map" and args.html is not None:
        from sonovec.server.map_html import write_map_html

        return write_map_html(args.folder, args.html, args.label_depth)
    if args.command == "map":
        shape = {"pca_components": args.pca, "perplexity": args.perplexity, "method": args.method}
        return draw_map(args.folder, args.png or args.folder / "map.png", args.label_depth, **shape)
    if args.command == "serve":
        import asyncio

        settings = settings_from(args)
        _configure_logging(settings.log_level)
        from sonovec.server.serve import serve

        asyncio.run(serve(settings))
        return 0
    return _extract(args)


def _extract(args: argparse.Namespace) -> int:
    import asyncio

    defaults = {k: v for k, v in EXTRACT_DEFAULTS.items() if f"SONOVEC_{k.upper()}" not in os.environ}
    settings = settings_from(args, **defaults)
    _configure_logging(settings.log_level)
    from sonovec.server.extract import ExtractOptions, run_extract

    options = ExtractOptions(
        input=args.input,
        output=args.output,
        model=args.model,
        latents=args.latents,
        pooling=args.pooling,
        normalize=args.normalize,
        fragment_seconds=args.fragment_seconds,
        fragment_offset=args.fragment_offset,
        concurrency=args.concurrency,
        extensions=tuple(e.strip().lstrip(".").lower() for e in args.extensions.split(",") if e.strip()),
        progress=args.progress,
        format=args.format,
    )
    if args.engine == "ray":
        from sonovec.server.ray_extract import RayOptions, run_ray_extract

        ray_options = RayOptions(args.address, args.ray_cpus, args.actors, args.shard_files)
        return run_ray_extract(settings, options, ray_options)
    return asyncio.run(run_extract(settings, options))


def add_compare_parser(commands: Any) -> None:
    """``sonovec compare FOLDER``: learned embeddings against feature baselines (compare.py)."""
    compare = commands.add_parser(
        "compare", help="Linear probe, kNN, confusion and maps per model on a labelled folder."
    )
    compare.add_argument("folder", type=Path, help="Recordings under FOLDER/<label>/... (label: level 1).")
    compare.add_argument("--output", type=Path, default=None, help="Report folder [FOLDER/compare].")
    compare.add_argument("--pooling", choices=["mean", "mean_std"], default="mean_std")
    compare.add_argument("--folds", type=int, default=5, help="Stratified folds of the linear probe.")
    compare.add_argument("--repeats", type=int, default=3, help="Repeats of the k-fold, reshuffled.")
    compare.add_argument("--neighbours", type=int, default=5, help="k of the kNN accuracy.")
    add_settings_flags(compare)

    def run(args: argparse.Namespace) -> int:
        import asyncio

        from sonovec.server.compare import DEFAULT_MODELS, CompareOptions, run_compare

        # --models: the models compared (default: EnCodec 48 kHz and the three feature baselines)
        settings = settings_from(args, grpc_port=0, max_wait_ms=20.0, models=list(DEFAULT_MODELS))
        _configure_logging(settings.log_level)
        options = CompareOptions(
            folder=args.folder, output=args.output or args.folder / "compare",
            models=tuple(settings.models),
            pooling=args.pooling, folds=args.folds, repeats=args.repeats, neighbours=args.neighbours,
        )
        return asyncio.run(run_compare(settings, options))

    compare.set_defaults(handler=run)


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


def draw_map(folder: Path, png: Path, label_depth: int, **map_options: Any) -> int:
    import json

    import numpy as np

    from sonovec.server.plots import embedding_map_png

    if not (folder / "embeddings.npy").exists():
        raise SystemExit(f"sonovec map: {folder} has no embeddings.npy; make it with 'sonovec extract'")
    vectors = np.load(folder / "embeddings.npy")
    paths = (folder / "paths.txt").read_text().split("\n")[: len(vectors)]
    labels = [
        "/".join(Path(p).parts[:label_depth]) if len(Path(p).parts) > label_depth else "(top)" for p in paths
    ]
    model = json.loads((folder / "model.json").read_text())
    title = f"{len(vectors)} recordings, {model['model']}, {model['pooling']} pooling"
    if not model["pretrained"]:
        title += " (RANDOM-INIT WEIGHTS)"
    png.write_bytes(embedding_map_png(vectors, labels, title, **map_options))
    print(png)
    return 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faiss tries its AVX512 builds first and logs each miss ("No module named
    # 'faiss.swigfaiss_avx512'") at INFO; that reads like an error and is none.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
