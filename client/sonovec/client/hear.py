"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over a running sonovec.

The embeddings come from the server; this module needs numpy and the sonovec client, no torch.
Audio may be a numpy array or a torch tensor (duck-typed: anything with ``.detach()``); a torch
tensor in gives torch tensors out (made by ``audio.new_tensor``), numpy in gives numpy out.

::

    from sonovec.client import hear

    model = hear.load_model("http://localhost:8000?model=encodec_48khz")   # or grpc://host:50051?...
    audio = np.zeros((4, model.sample_rate * 2), np.float32)              # [n_sounds, n_samples]
    scene = hear.get_scene_embeddings(audio, model)                        # [4, 128]
    frames, times_ms = hear.get_timestamp_embeddings(audio, model)         # [4, T, 128], [4, T]

``load_model(model_file_path)`` takes a server URL with options as query parameters, or the path
of a JSON file holding the same options (``{"url": "grpc://host:50051", "model": ...}``):

- ``model``: the sonovec model (default: the server's default model);
- ``pooling``: ``mean`` (scene embedding of ``latent_dim``) or ``mean_std`` (twice that);
- ``normalize``: ``true`` (default) or ``false``: L2-normalise the scene embeddings;
- ``api_key``: else the ``SONOVEC_API_KEY`` environment variable;
- ``concurrency``: requests in flight (default 8), ``timeout``: seconds per request.

Sounds are mono at ``model.sample_rate`` (the sonovec model's rate; the server duplicates mono
into the 48 kHz model's two channels). Sounds go through ``Client.embed_many`` (the bulk client:
fitted to the server's limits, batched over gRPC, retried when overloaded).

**Timestamps.** Each frame's timestamp is the service's own ``frame_times_s`` (the start of the
frame's hop, in milliseconds). The 24 kHz model's times only increase. The 48 kHz model encodes
1 s segments that overlap by 1 % (480 samples = 1.5 frames), so its frame times step back at each
segment boundary; HEAR requires increasing timestamps, so this module keeps a frame only if its
time is later than every frame kept before it: at each boundary the new segment's first frame,
which restarts inside the previous segment's last 1.5 frames, is dropped, and its next frame (half
a hop after the previous segment's last) is kept. Kept frames are exactly the service's frames
and times; every sound of a batch (HEAR batches sounds of one length) keeps the same count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np

from sonovec.client._client import Client

_OPTIONS = ("model", "pooling", "normalize", "api_key", "concurrency", "timeout")


@dataclass
class SonovecHearModel:
    """What ``load_model`` returns: the HEAR attributes, and the client that embeds."""

    client: Client
    model: str
    sample_rate: int
    scene_embedding_size: int
    timestamp_embedding_size: int
    pooling: str = "mean"
    normalize: bool = True
    concurrency: int = 8
    timeout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.client.close()


def parse_location(model_file_path: str) -> dict[str, Any]:
    """A URL with query options, or a JSON file of options with ``url``: the options as a dict."""
    path = Path(model_file_path)
    if "://" not in model_file_path and path.is_file():
        options = dict(json.loads(path.read_text()))
        if "url" not in options:
            raise ValueError(f"{model_file_path}: a sonovec HEAR file needs a 'url'")
        return options
    parts = urlsplit(model_file_path)
    if parts.scheme not in ("http", "https", "grpc", "grpcs"):
        raise ValueError(
            f"model_file_path {model_file_path!r}: give a sonovec URL (http://host:8000?model=...) "
            "or a JSON file of options with a 'url'"
        )
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {', '.join(_OPTIONS)}")
    return {"url": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), **query}


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def load_model(model_file_path: str = "", **overrides: Any) -> SonovecHearModel:
    """Connect to the server named by ``model_file_path`` (see the module's doc); ``overrides``
    take the place of its options."""
    options = {**parse_location(model_file_path or "http://localhost:8000"), **overrides}
    api_key = options.get("api_key") or os.environ.get("SONOVEC_API_KEY")
    timeout = float(options["timeout"]) if options.get("timeout") else None
    client = Client(str(options["url"]), api_key=api_key, **({"timeout": timeout} if timeout else {}))
    try:
        info = client.models().get(options.get("model"))
    except Exception:
        client.close()
        raise
    pooling = str(options.get("pooling", "mean"))
    if pooling not in ("mean", "mean_std"):
        client.close()
        raise ValueError(f"pooling {pooling!r}: mean or mean_std")
    return SonovecHearModel(
        client=client,
        model=info.name,
        sample_rate=info.sample_rate,
        scene_embedding_size=info.latent_dim * (2 if pooling == "mean_std" else 1),
        timestamp_embedding_size=info.latent_dim,
        pooling=pooling,
        normalize=_flag(options.get("normalize", True)),
        concurrency=int(options.get("concurrency", 8)),
        timeout=timeout,
        options=options,
    )


def _as_numpy(audio: Any) -> np.ndarray:
    """``[n_sounds, n_samples]`` float32 from numpy or a torch tensor (any device)."""
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"audio of shape {array.shape}: HEAR takes [n_sounds, n_samples]")
    return array


def _like(audio: Any, array: np.ndarray) -> Any:
    return audio.new_tensor(array) if hasattr(audio, "new_tensor") else array


def _embed(audio: np.ndarray, model: SonovecHearModel, frames: bool) -> list[Any]:
    return model.client.embed_many(
        list(audio),
        sample_rate=model.sample_rate,
        model=model.model,
        pooling=model.pooling,
        normalize=model.normalize,
        frames=frames,
        concurrency=model.concurrency,
        progress=False,
        timeout=model.timeout,
    )


def get_scene_embeddings(audio: Any, model: SonovecHearModel) -> Any:
    """``[n_sounds, scene_embedding_size]`` float32: each sound's pooled embedding."""
    array = _as_numpy(audio)
    if not len(array):
        return _like(audio, np.zeros((0, model.scene_embedding_size), np.float32))
    vectors = np.stack([e.vector for e in _embed(array, model, frames=False)]).astype(np.float32)
    return _like(audio, vectors)


def increasing(times_s: np.ndarray) -> np.ndarray:
    """Indices of the frames kept: each one later than every frame kept before it (the 48 kHz
    model's segment overlaps step back; see the module's doc)."""
    kept: list[int] = []
    last = -np.inf
    for i, t in enumerate(times_s):
        if t > last:
            kept.append(i)
            last = t
    return np.asarray(kept, dtype=np.int64)


def get_timestamp_embeddings(audio: Any, model: SonovecHearModel) -> tuple[Any, Any]:
    """``([n_sounds, T, timestamp_embedding_size] float32, [n_sounds, T] float32 milliseconds)``:
    the encoder's latent frames and the service's frame times, increasing (module's doc)."""
    array = _as_numpy(audio)
    if not len(array):
        empty = np.zeros((0, 0, model.timestamp_embedding_size), np.float32)
        return _like(audio, empty), _like(audio, np.zeros((0, 0), np.float32))
    frames, times = [], []
    for embedding in _embed(array, model, frames=True):
        assert embedding.frames is not None and embedding.frame_times_s is not None
        keep = increasing(embedding.frame_times_s)
        frames.append(embedding.frames[keep])
        times.append(embedding.frame_times_s[keep] * 1000.0)
    if len({len(t) for t in times}) != 1:
        raise ValueError("sounds of different lengths: HEAR batches sounds of one length")
    stacked = np.stack(frames).astype(np.float32)
    return _like(audio, stacked), _like(audio, np.stack(times).astype(np.float32))
