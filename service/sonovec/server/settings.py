"""One settings object: every field is a CLI flag (``--max-wait-ms``) and an env var
(``SONOVEC_MAX_WAIT_MS``); its description is the ``--help`` text. Read only when built."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SONOVEC_", extra="forbid")

    # --- network ---
    host: str = Field("127.0.0.1", description="Address REST and gRPC listen on (0.0.0.0 in containers).")
    port: int = Field(
        8000, ge=0, le=65535, description="REST port (OpenAPI docs at /docs, metrics at /metrics)."
    )
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 disables gRPC.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Separate Prometheus port; 0 serves /metrics on the REST port only."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; when set, every /v1 call needs 'Authorization: Bearer KEY' "
        "or 'x-api-key: KEY'. Empty: no auth.",
    )

    # --- models ---
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["encodec_48khz", "encodec_24khz"],
        description="Comma-separated models to load; the first is the default "
        "(encodec_48khz, encodec_24khz).",
    )
    backend: Literal["auto", "torch", "onnx", "fake"] = Field(
        "auto",
        description="Model runtime: auto (ONNX Runtime on CPU, exported once per weights and cached "
        "under data_dir; torch on CUDA), torch, onnx, or fake (tiny deterministic stand-in, tests only).",
    )
    weights: str = Field(
        "pretrained",
        description="'pretrained' (weights dir, torch hub cache, then download), a directory holding the "
        "EnCodec checkpoints, or 'random' (random-init, flagged in every response; never trained).",
    )
    allow_random_weights: bool = Field(
        True, description="Refuse to start with --weights random when false (containers set it false)."
    )
    fake_seconds_per_audio_second: float = Field(
        0.0,
        ge=0,
        description="fake backend only: simulated model time per audio second (load and drain tests).",
    )
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda or cuda:N.")
    precision: Literal["fp32", "bf16", "fp16", "int8"] = Field(
        "fp32",
        description="Model precision of embeddings and decoding (codes always come from fp32 latents): "
        "fp32; int8 (onnx on CPU: quantized encoder convolutions); bf16 (torch, CPU or CUDA); fp16 (CUDA).",
    )
    threads: int = Field(
        0,
        ge=0,
        description="Cores for the model; 0 = all. torch on CPU: divided among the workers as intra-op "
        "threads; onnx on CPU: parallel 1-thread sessions.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=8,
        description="Model calls in flight at once. CUDA: 2 overlaps one batch's copies with the other's "
        "compute; CPU torch: 2 with --threads 1 runs two batches side by side.",
    )

    # --- batching ---
    max_batch_seconds: float | None = Field(
        None,
        gt=0,
        description="Audio seconds per model call: the batch budget (cost, not request count). Default: "
        "each model's own, 16 s for 48 kHz (16 windows), 64 s for 24 kHz (~5 of its 12 s chunks).",
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long a batch waits for more windows before it runs."
    )
    max_queue_seconds: float = Field(
        1800.0, gt=0, description="Audio seconds queued at most; beyond it requests get 429 + Retry-After."
    )
    max_queue_wait_s: float = Field(
        30.0,
        gt=0,
        description="Admission bound on the projected queue wait (queued audio seconds over the "
        "measured throughput); beyond it, or beyond a request's own deadline, 429 + Retry-After.",
    )
    request_timeout_s: float = Field(
        300.0, gt=0, description="Default deadline of a request (a client may ask for less)."
    )

    # --- limits on input ---
    max_request_bytes: int = Field(256 * 2**20, gt=0, description="Largest upload, in bytes.")
    max_audio_seconds: float = Field(1800.0, gt=0, description="Longest recording, in seconds.")
    max_channels: int = Field(
        8, ge=1, description="Most channels a recording may have (mixed to the model's)."
    )
    max_recordings: int = Field(64, ge=1, description="Most recordings in one similarity request.")
    max_inflight_bytes: int = Field(
        4 * 2**30,
        gt=0,
        description="Memory budget across requests in flight: request bodies (counted 3x: bytes, "
        "parsed text, decoded audio bytes) and decoded audio (twice, at the model's rate). Beyond it "
        "429 + Retry-After; a request that alone needs more: 413.",
    )

    # --- storage ---
    data_dir: Path = Field(Path("data"), description="Where collections, probes and exports live.")
    cache_entries: int = Field(
        4096, ge=0, description="In-process embedding cache entries (LRU); 0 disables."
    )
    redis_url: str | None = Field(
        None, description="Redis URL for the shared cache and collections, e.g. redis://localhost:6379/0."
    )
    redis_prefix: str = Field(
        "sonovec", description="Prefix of every Redis key this service reads and writes."
    )
    redis_timeout_ms: float = Field(
        50.0,
        gt=0,
        description="Bound on one Redis cache call; slower counts as an error and bypasses the cache.",
    )
    cache_ttl_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="Lifetime of a Redis cache entry (0: none). The memory bound is Redis' "
        "own maxmemory, with maxmemory-policy volatile-lru (see docs/collections.md).",
    )
    snapshot_interval_s: float = Field(
        60.0,
        gt=0,
        description="Collections without Redis: seconds between snapshots while the write-ahead log "
        "grows (also every 50,000 logged ops, and at shutdown).",
    )

    log_level: str = Field("info", description="Log level.")

    @field_validator("api_keys", "models", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from sonovec.models.registry import MODEL_SPECS

        if not value:
            raise ValueError("at least one model is needed")
        unknown = [m for m in value if m not in MODEL_SPECS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {', '.join(MODEL_SPECS)}")
        return value
