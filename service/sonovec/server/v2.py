"""The Open Inference Protocol (KServe v2) over the one core: its models, tensors and errors.

REST (``http/v2.py``) and gRPC (``grpc/inference.py``) only move bytes: they parse their wire into
``Tensor`` objects and parameters, call ``infer`` here, and write the tensors it returns. Every
model of the service is three v2 models::

    {model}_embed   WAVEFORM FP32 [N, T] (mono) or [N, C, T] at the model's rate (or the
                    ``sample_rate`` parameter's), or AUDIO BYTES [N] (each an encoded file)
                    -> EMBEDDING FP32 [N, D]         (Service.embed_many: the N recordings batch)
    {model}_encode  WAVEFORM [1, T] | [1, C, T], or AUDIO [1]; parameter ``bandwidth`` (kbps)
                    -> CODES INT64 [K, F] (the segments' frames one after another),
                       SCALES FP32 [S] (one per segment), NUM_SAMPLES INT64 [1]
    {model}_decode  CODES INT64 [K, F], SCALES FP32 [S] (optional), NUM_SAMPLES INT64 [1]
                    (optional) -> WAVEFORM FP32 [1, C, T] at the model's rate

Parameters (request level): ``pooling`` ("mean" | "mean_std"), ``normalize`` (bool),
``sample_rate`` (of WAVEFORM), ``bandwidth``; others (Triton's ``priority``, ``timeout``, ...)
are ignored. Errors are ``SonovecError``; ``HTTP_STATUS`` is this protocol's status for each kind
(malformed input is 400, as Triton answers).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonovec.models import ModelSpec
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.errors import HTTP_STATUS as V1_HTTP_STATUS
from sonovec.server.errors import ErrorKind, SonovecError, invalid, not_found

VERSION = "1"  # every sonovec v2 model has one version
PLATFORM = "sonovec"
SERVER_NAME = "sonovec"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data", "model_configuration")
OPS = ("embed", "encode", "decode")

# The protocol answers malformed requests with 400 (Triton, KServe); the rest as /v1 does.
HTTP_STATUS: dict[ErrorKind, int] = {**V1_HTTP_STATUS, ErrorKind.INVALID: 400}

# v2 datatype -> numpy dtype (little-endian), for the fixed-size types.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"


@dataclass
class Tensor:
    """One named tensor: ``array`` for fixed-size types, ``elements`` (row-major) for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray | None = None
    elements: list[bytes] | None = None

    @classmethod
    def of(cls, name: str, array: np.ndarray) -> Tensor:
        datatype = next(k for k, v in DTYPES.items() if v == array.dtype)
        return cls(name, datatype, tuple(array.shape), array=array)

    def raw(self) -> bytes:
        """The binary form: little-endian row-major elements; BYTES as 4-byte length + bytes each."""
        if self.elements is not None:
            return b"".join(struct.pack("<I", len(e)) + e for e in self.elements)
        assert self.array is not None
        return np.ascontiguousarray(self.array, dtype=DTYPES[self.datatype]).tobytes()

    def json_data(self) -> list[Any]:
        """The JSON form: a flat row-major list (BYTES as base64 strings: files are not text)."""
        if self.elements is not None:
            return [base64.b64encode(e).decode() for e in self.elements]
        assert self.array is not None
        return self.array.reshape(-1).tolist()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: variable
    optional: bool = False


@dataclass(frozen=True)
class Model:
    """One v2 model: a sonovec model and an operation."""

    name: str
    base: str  # the sonovec model (encodec_48khz)
    op: str  # embed | encode | decode
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def metadata(self) -> dict[str, Any]:
        """``GET /v2/models/{name}`` (and gRPC ModelMetadata, field for field)."""
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": [_tensor_metadata(t) for t in self.inputs],
            "outputs": [_tensor_metadata(t) for t in self.outputs],
        }

    def config(self) -> dict[str, Any]:
        """Triton's model configuration (``GET /v2/models/{name}/config``; gRPC ModelConfig):
        ``max_batch_size`` 0, since the shapes above carry their own first dimension."""
        return {
            "name": self.name,
            "platform": PLATFORM,
            "backend": PLATFORM,
            "max_batch_size": 0,
            "input": [
                {"name": t.name, "data_type": f"TYPE_{_config_type(t.datatype)}", "dims": list(t.shape)}
                | ({"optional": True} if t.optional else {})
                for t in self.inputs
            ],
            "output": [
                {"name": t.name, "data_type": f"TYPE_{_config_type(t.datatype)}", "dims": list(t.shape)}
                for t in self.outputs
            ],
        }


def _tensor_metadata(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def _config_type(datatype: str) -> str:
    return "STRING" if datatype == BYTES else datatype


def models_of(spec: ModelSpec) -> list[Model]:
    """The three v2 models of one sonovec model."""
    audio = (
        TensorSpec("WAVEFORM", "FP32", (-1, -1), optional=True),
        TensorSpec("AUDIO", BYTES, (-1,), optional=True),
    )
    return [
        Model(f"{spec.name}_embed", spec.name, "embed", audio, (TensorSpec("EMBEDDING", "FP32", (-1, -1)),)),
        Model(
            f"{spec.name}_encode",
            spec.name,
            "encode",
            audio,
            (
                TensorSpec("CODES", "INT64", (-1, -1)),
                TensorSpec("SCALES", "FP32", (-1,)),
                TensorSpec("NUM_SAMPLES", "INT64", (1,)),
            ),
        ),
        Model(
            f"{spec.name}_decode",
            spec.name,
            "decode",
            (
                TensorSpec("CODES", "INT64", (-1, -1)),
                TensorSpec("SCALES", "FP32", (-1,), optional=True),
                TensorSpec("NUM_SAMPLES", "INT64", (1,), optional=True),
            ),
            (TensorSpec("WAVEFORM", "FP32", (1, spec.channels, -1)),),
        ),
    ]


def model_names(service: Service) -> list[str]:
    return [m.name for backend in service.backends.values() for m in models_of(backend.spec)]


def find_model(service: Service, name: str, version: str = "") -> Model:
    """The v2 model ``name`` (version empty or "1"), or NOT_FOUND."""
    for backend in service.backends.values():
        for model in models_of(backend.spec):
            if model.name == name:
                if version not in ("", VERSION):
                    raise not_found(f"model {name!r} has no version {version!r}", allowed=VERSION)
                return model
    raise not_found(f"unknown model {name!r}", field="model_name", allowed=", ".join(model_names(service)))


# ---- tensors from the wire ----


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """A tensor from its binary form (REST binary extension, gRPC raw_input_contents)."""
    dims = _check_shape(name, shape)
    if datatype == BYTES:
        elements = _split_bytes(name, raw)
        _check_count(name, len(elements), dims)
        return Tensor(name, datatype, dims, elements=elements)
    dtype = _dtype(name, datatype)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise invalid(
            f"input {name}: {len(raw)} bytes of data for shape {list(dims)} {datatype}",
            field=name,
            allowed=f"{expected} bytes",
        )
    return Tensor(name, datatype, dims, array=np.frombuffer(raw, dtype=dtype).reshape(dims))


def tensor_from_list(name: str, datatype: str, shape: Sequence[int], data: Any) -> Tensor:
    """A tensor from its JSON form (flat or nested row-major list; BYTES elements base64)."""
    dims = _check_shape(name, shape)
    flat = _flatten(data)
    _check_count(name, len(flat), dims)
    if datatype == BYTES:
        try:
            elements = [base64.b64decode(str(e), validate=True) for e in flat]
        except ValueError:
            raise invalid(f"input {name}: BYTES elements in JSON must be base64", field=name) from None
        return Tensor(name, datatype, dims, elements=elements)
    dtype = _dtype(name, datatype)
    try:
        array = np.asarray(flat, dtype=dtype).reshape(dims)
    except (TypeError, ValueError, OverflowError):
        raise invalid(f"input {name}: data are not {datatype} values", field=name) from None
    return Tensor(name, datatype, dims, array=array)


def tensor_from_contents(name: str, datatype: str, shape: Sequence[int], contents: Any) -> Tensor:
    """A tensor from gRPC ``InferTensorContents`` (the typed repeated fields)."""
    if datatype == BYTES:
        dims = _check_shape(name, shape)
        elements = [bytes(e) for e in contents.bytes_contents]
        _check_count(name, len(elements), dims)
        return Tensor(name, datatype, dims, elements=elements)
    field_name = _CONTENTS_FIELD.get(datatype)
    if field_name is None:
        raise invalid(f"input {name}: {datatype} travels only as raw contents", field=name)
    return tensor_from_list(name, datatype, shape, list(getattr(contents, field_name)))


_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _dtype(name: str, datatype: str) -> np.dtype:
    try:
        return DTYPES[datatype]
    except KeyError:
        allowed = ", ".join([*DTYPES, BYTES])
        raise invalid(f"input {name}: unknown datatype {datatype!r}", field=name, allowed=allowed) from None


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise invalid(f"input {name}: shape {list(dims)} has a negative dimension", field=name)
    return dims


def _check_count(name: str, count: int, dims: tuple[int, ...]) -> None:
    expected = int(np.prod(dims, dtype=np.int64))
    if count != expected:
        raise invalid(
            f"input {name}: {count} elements for shape {list(dims)}", field=name, allowed=f"{expected}"
        )


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise invalid(f"input {name}: truncated BYTES element length", field=name)
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise invalid(f"input {name}: a BYTES element runs past the data", field=name)
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise invalid("tensor data must be a JSON list", field="data")
    if not data or not isinstance(data[0], list):
        return data
    return [x for row in data for x in _flatten(row)]


# ---- parameters ----


@dataclass(frozen=True)
class Request:
    """One inference request as the transports parsed it."""

    model: str
    inputs: list[Tensor]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    outputs: Sequence[str] = ()  # requested output names; empty: all
    version: str = ""
    timeout_s: float | None = None


def _param(params: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = params.get(name, default)
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise invalid(f"parameter {name}: {value!r} is not a {kind.__name__}", field=f"parameters.{name}")
    return value


# ---- inference ----


async def infer(service: Service, request: Request) -> list[Tensor]:
    """Run ``request`` through the core; its outputs in the model's order (or the requested)."""
    model = find_model(service, request.model, request.version)
    inputs = _check_inputs(model, request.inputs)
    if model.op == "embed":
        outputs = await _embed(service, model, inputs, request)
    elif model.op == "encode":
        outputs = await _encode(service, model, inputs, request)
    else:
        outputs = await _decode(service, model, inputs, request)
    return _select(model, outputs, request.outputs)


def _check_inputs(model: Model, inputs: Sequence[Tensor]) -> dict[str, Tensor]:
    specs = {t.name: t for t in model.inputs}
    given: dict[str, Tensor] = {}
    for tensor in inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise invalid(
                f"{model.name} has no input {tensor.name!r}", field="inputs", allowed=", ".join(specs)
            )
        if tensor.datatype != spec.datatype:
            raise invalid(
                f"input {tensor.name} has datatype {tensor.datatype}",
                field=tensor.name,
                allowed=spec.datatype,
            )
        given[tensor.name] = tensor
    missing = [t.name for t in model.inputs if not t.optional and t.name not in given]
    if missing:
        raise invalid(f"{model.name} needs input {missing[0]}", field="inputs")
    return given


def _select(model: Model, outputs: list[Tensor], requested: Sequence[str]) -> list[Tensor]:
    if not requested:
        return outputs
    by_name = {t.name: t for t in outputs}
    unknown = [name for name in requested if name not in by_name]
    if unknown:
        allowed = ", ".join(t.name for t in model.outputs)
        raise invalid(f"{model.name} has no output {unknown[0]!r}", field="outputs", allowed=allowed)
    return [by_name[name] for name in requested]


def _audio_sources(
    model: Model, spec: ModelSpec, inputs: dict[str, Tensor], params: Mapping[str, Any]
) -> list[AudioSource]:
    """WAVEFORM [N, T] | [N, C, T] or AUDIO [N]: exactly one of them, N recordings."""
    if ("WAVEFORM" in inputs) == ("AUDIO" in inputs):
        raise invalid(f"{model.name} takes exactly one of WAVEFORM and AUDIO", field="inputs")
    if "AUDIO" in inputs:
        elements = inputs["AUDIO"].elements or []
        if len(inputs["AUDIO"].shape) != 1:
            raise invalid("input AUDIO must have shape [N]", field="AUDIO", allowed="[N]")
        return [AudioSource(data=e) for e in elements]
    wave = inputs["WAVEFORM"]
    assert wave.array is not None
    if wave.array.ndim not in (2, 3):
        raise invalid(
            f"input WAVEFORM has shape {list(wave.shape)}",
            field="WAVEFORM",
            allowed="[N, samples] (mono) or [N, channels, samples]",
        )
    rate = _param(params, "sample_rate", int, spec.sample_rate)
    return [AudioSource(array=wave.array[i], sample_rate=rate) for i in range(wave.shape[0])]


async def _embed(service: Service, model: Model, inputs: dict[str, Tensor], request: Request) -> list[Tensor]:
    spec = service.backend(model.base).spec
    params = request.parameters
    sources = _audio_sources(model, spec, inputs, params)
    options = EmbedOptions(
        model=model.base,
        pooling=_param(params, "pooling", str, "mean"),
        normalize=_param(params, "normalize", bool, True),
        timeout_s=request.timeout_s,
    )
    vectors: list[np.ndarray | None] = [None] * len(sources)
    async for index, result in service.embed_many(sources, options):
        if isinstance(result, SonovecError):
            raise result  # v2 has no per-item errors: the first fails the request (the rest cancelled)
        vectors[index] = result.vector
    return [Tensor.of("EMBEDDING", np.stack([v for v in vectors if v is not None]).astype(np.float32))]


def _one(model: Model, sources: list[AudioSource]) -> AudioSource:
    if len(sources) != 1:
        raise invalid(
            f"{model.name} takes one recording, got {len(sources)}", field="inputs", allowed="N = 1"
        )
    return sources[0]


async def _encode(
    service: Service, model: Model, inputs: dict[str, Tensor], request: Request
) -> list[Tensor]:
    spec = service.backend(model.base).spec
    source = _one(model, _audio_sources(model, spec, inputs, request.parameters))
    bandwidth = _param(request.parameters, "bandwidth", float, 6.0)
    result = await service.encode(source, model=model.base, bandwidth=bandwidth, timeout_s=request.timeout_s)
    return [
        Tensor.of("CODES", np.concatenate(result.codes, axis=1).astype(np.int64)),
        Tensor.of("SCALES", np.asarray(result.scales, dtype=np.float32)),
        Tensor.of("NUM_SAMPLES", np.asarray([result.num_samples], dtype=np.int64)),
    ]


async def _decode(
    service: Service, model: Model, inputs: dict[str, Tensor], request: Request
) -> list[Tensor]:
    spec = service.backend(model.base).spec
    codes = inputs["CODES"].array
    assert codes is not None
    if codes.ndim != 2:
        raise invalid(f"input CODES has shape {list(codes.shape)}", field="CODES", allowed="[K, F]")
    segments = [codes]
    if spec.segmented:  # the segments' frames one after another, each full but the last
        full = spec.num_frames(spec.window)
        segments = [codes[:, i : i + full] for i in range(0, codes.shape[1], full)]
    scales = inputs["SCALES"].array if "SCALES" in inputs else None
    num_samples = inputs["NUM_SAMPLES"].array if "NUM_SAMPLES" in inputs else None
    if num_samples is not None and num_samples.size != 1:
        raise invalid("input NUM_SAMPLES must hold one value", field="NUM_SAMPLES", allowed="[1]")
    result = await service.decode(
        segments,
        None if scales is None else [float(s) for s in scales.reshape(-1)],
        model=model.base,
        num_samples=None if num_samples is None else int(num_samples.reshape(-1)[0]),
        timeout_s=request.timeout_s,
    )
    return [Tensor.of("WAVEFORM", result.audio[None].astype(np.float32))]
