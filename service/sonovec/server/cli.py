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
    plot.add_argument("--pca", type=int, default=50, help="PCA components before t-SNE / UMAP.")
    plot.add_argument("--perplexity", type=float, default=None, help="t-SNE perplexity [min(30, (N-1)/3)].")
    plot.add_argument("--method", choices=["tsne", "umap"], default="tsne", help="umap needs umap-learn.")

    add_compare_parser(commands)

    probe = commands.add_parser(
        "probe", help="Exit 0 when the service is ready (container health check).", add_help=False
    )
    probe.add_argument("probe_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "run", None) is not None:  # subcommands that carry their own runner
        return int(args.run(args))
    if args.command == "probe":
        from sonovec.server.probe import main as probe_main

        return probe_main(args.probe_args)
    if args.command == "map":
        shape = {"pca_components": args.pca, "perplexity": args.perplexity, "method": args.method}
        return draw_map(args.folder, args.png or args.folder / "map.png", args.label_depth, **shape)
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

    compare.set_defaults(run=run)


def draw_map(folder: Path, png: Path, label_depth: int, **map_options: Any) -> int:
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
    png.write_bytes(embedding_map_png(vectors, labels, title, **map_options))
    print(png)
    return 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
