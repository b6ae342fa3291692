"""Per-request audio ingestion: bytes or an array in, a checked ``Recording`` at the model's rate
and channel layout out. Runs before queueing, so a bad file fails only its own request.

Order of work, cheapest check first::

    bytes > max_bytes?  ->  open header (libsndfile) / parse PCM format
    channels, sample rate, declared duration  ->  read blocks [n, C], at most max_seconds of them
    (each block scanned for NaN/Inf and peak, mixed to the model's layout, and resampled by a
    soxr HQ stream: the recording never exists at the source rate, only one block of it)
    no samples / NaN or Inf / beyond +-100 / silent?  ->  mono to stereo if needed

Memory: the output at the model's rate (twice, while its blocks are joined) plus one source
block; ``reserve`` (if given) hears that figure as it grows and may stop the decode.

Channel layout, applied before resampling (both steps are linear, so the order does not change
the result, and mixing first resamples fewer channels):

- to mono: the mean of all channels;
- mono to stereo: the one channel duplicated;
- C > 2 to stereo: left = mean of the even-indexed channels (0, 2, 4, ...), right = mean of the
  odd-indexed ones (1, 3, 5, ...). For 5.1 in WAV order (L R C LFE Ls Rs) that puts C with the
  left side and LFE with the right: simple and predictable, not an ITU downmix.

Nothing is clipped: float sources keep values beyond [-1, 1] (up to +-100, ``MAX_ABS_SAMPLE``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
from soundfile import _ffi, _snd

from sonovec.server.errors import ErrorKind, SonovecError, invalid, too_large

SUPPORTED_FORMATS: tuple[str, ...] = ("wav", "flac", "ogg", "opus", "mp3", "aiff", "pcm_f32le", "pcm_s16le")

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
SILENCE_PEAK = 1e-7  # below this peak a recording is digital silence
BLOCK_FRAMES = 1 << 16  # frames read (and mixed, and resampled) at a time
# Float sources may exceed full scale (+-1), but not by more than 40 dB: far larger values
# overflow the model (3e38 gives NaN latents, 1e30 all-zero ones) and are refused, not clamped.
MAX_ABS_SAMPLE = 100.0

# libsndfile's major format -> our name; OGG is split by codec below. Other formats libsndfile
# knows (AU, CAF, VOC, PAF, ...) are refused: fewer parsers exposed, one documented list.
_CONTAINERS = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "FLAC": "flac",
    "OGG": "ogg",
    "MP3": "mp3",
    "AIFF": "aiff",
}
_PCM_DTYPES: dict[str, np.dtype] = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's SF_COUNT_MAX: the header does not say how long


Reserve = Callable[[int], None]  # told the bytes a decode holds so far; raises to stop it


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int
    max_seconds: float
    max_channels: int


@dataclass(frozen=True)
class PcmFormat:
    """Headerless interleaved PCM: what the caller states about bytes that cannot describe themselves."""

    encoding: Literal["f32le", "s16le"]
    sample_rate: int
    channels: int


@dataclass
class Recording:
    samples: np.ndarray  # [C, T] float32, C-contiguous, at the target rate and channel count
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_format: str  # one of SUPPORTED_FORMATS, or "array"
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. a truncated stream, decoded in part

    @property
    def num_samples(self) -> int:
        """Frames per channel (T)."""
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class _Source:
    """What a header (or the caller) says about a recording before any sample is decoded."""

    sample_rate: int
    channels: int
    frames: int | None  # None: unknown until read
    format: str


@dataclass
class _Scan:
    """Running facts about the source samples, gathered block by block."""

    frames: int = 0
    nonfinite: int = 0
    peak: float = 0.0


# --- public API -------------------------------------------------------------------------------


def decode_audio(
    data: bytes,
    *,
    target_rate: int,
    target_channels: int,
    limits: AudioLimits,
    pcm: PcmFormat | None = None,
    field: str = "audio",
    reserve: Reserve | None = None,
) -> Recording:
    """Decode a container (detected by libsndfile from the bytes) or, with ``pcm``, raw interleaved
    PCM; check it against ``limits``; return it at ``target_rate`` with ``target_channels``.

    Raises ``SonovecError`` (INVALID, TOO_LARGE or UNSUPPORTED) naming ``field``."""
    _check_target(target_rate, target_channels)
    _check_body(len(data), limits, field)
    target = (target_rate, target_channels)
    if pcm is not None:
        source, blocks = _pcm_source(data, pcm, field)
        return _ingest(source, blocks, target, limits, field, reserve)
    with _open_container(data, field) as handle:
        source = _container_source(handle, field)
        blocks = _container_blocks(handle, field)
        return _ingest(source, blocks, target, limits, field, reserve, container=data)


def from_array(
    samples: np.ndarray,
    sample_rate: int,
    *,
    target_rate: int,
    target_channels: int,
    limits: AudioLimits,
    field: str = "audio",
    reserve: Reserve | None = None,
) -> Recording:
    """Ingest a floating-point array, ``[C, T]`` or ``[T]`` (mono), with the same checks as
    ``decode_audio`` (its ``nbytes`` count against ``max_bytes``)."""
    _check_target(target_rate, target_channels)
    array = _as_channels_first(samples, field)
    if array.nbytes > limits.max_bytes:
        raise too_large(
            f"array is {array.nbytes} bytes; the limit is {limits.max_bytes}",
            field=field,
            allowed=f"at most {limits.max_bytes} bytes",
        )
    frames = array.shape[1]
    source = _Source(int(sample_rate), array.shape[0], frames, "array")
    # float32 before scanning, so a float64 value too large for float32 counts as infinite
    blocks = (array[:, i : i + BLOCK_FRAMES].T.astype(np.float32) for i in range(0, frames, BLOCK_FRAMES))
    return _ingest(source, blocks, (target_rate, target_channels), limits, field, reserve)


def canonical_digest(rec: Recording) -> str:
    """sha256 hex of the canonical PCM: the float32 little-endian bytes of ``samples`` [C, T] in
    C order, then the sample rate and channel count as two little-endian uint32."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(rec.samples, dtype="<f4").data)
    digest.update(struct.pack("<II", rec.sample_rate, rec.samples.shape[0]))
    return digest.hexdigest()


# --- the pipeline shared by every source -------------------------------------------------------


def _ingest(
    source: _Source,
    blocks: Iterator[np.ndarray],
    target: tuple[int, int],
    limits: AudioLimits,
    field: str,
    reserve: Reserve | None = None,
    container: bytes | None = None,
) -> Recording:
    """Check ``source`` against ``limits``, read ``blocks`` ([n, C] each), return the recording
    (with warnings if ``container``, the file's bytes, turns out truncated).

    Each block is mixed to the model's layout and resampled to its rate as it arrives, so memory
    holds the output and one source block, never the whole recording at the source rate."""
    target_rate, target_channels = target
    _check_source(source, limits, field)
    rows = 1 if source.channels == 1 else target_channels  # mono is duplicated after resampling
    sink = _Resampled(source.sample_rate, target_rate, rows, reserve)
    scan = _collect(blocks, target_channels, sink, source, limits, field)
    _check_content(scan, source.channels, field)
    samples = sink.finish()
    if samples.shape[1] == 0:
        raise invalid(
            f"recording is too short: {scan.frames} frames at {source.sample_rate} Hz resample to none "
            f"at {target_rate} Hz",
            field=field,
            allowed="at least one sample at the model's rate",
        )
    if samples.shape[0] < target_channels:  # mono to stereo: duplicate after resampling, once
        if reserve is not None:
            reserve(samples.nbytes * target_channels * 2)
        samples = np.repeat(samples, target_channels, axis=0)
    return Recording(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=target_rate,
        source_sample_rate=source.sample_rate,
        source_channels=source.channels,
        source_format=source.format,
        warnings=[] if container is None else _truncation_warnings(container, source, scan),
    )


def _collect(
    blocks: Iterator[np.ndarray],
    target_channels: int,
    sink: _Resampled,
    source: _Source,
    limits: AudioLimits,
    field: str,
) -> _Scan:
    """Scan, mix and resample each [n, C] block into ``sink``; stop once more than the limit was
    read, whatever the header said."""
    max_frames = math.floor(limits.max_seconds * source.sample_rate)
    scan = _Scan()
    for block in blocks:
        _scan_block(scan, block)
        if scan.frames > max_frames:
            raise too_large(
                f"recording is longer than the {limits.max_seconds:g} s limit "
                f"(stopped reading after {scan.frames / source.sample_rate:.1f} s)",
                field=field,
                allowed=f"at most {limits.max_seconds:g} s of audio",
            )
        if scan.nonfinite or scan.peak > MAX_ABS_SAMPLE:
            break  # refused by _check_content: no need to decode the rest
        sink.push(_mix(block, target_channels))
    return scan


class _Resampled:
    """Mixed blocks [C, n] at ``source_rate`` in, [C, T'] at ``target_rate`` out, resampled by one
    soxr stream (HQ) per recording as blocks arrive. ``reserve`` hears the bytes held so far."""

    def __init__(self, source_rate: int, target_rate: int, rows: int, reserve: Reserve | None) -> None:
        self._stream = (
            None
            if source_rate == target_rate
            else soxr.ResampleStream(source_rate, target_rate, rows, dtype="float32", quality="HQ")
        )
        self._rows = rows
        self._parts: list[np.ndarray] = []
        self._held = 0
        self._reserve = reserve

    def push(self, block: np.ndarray, last: bool = False) -> None:
        if self._stream is None:
            out = block
        else:  # soxr streams take and give [n, C]
            out = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last).T
        if out.shape[1]:
            self._held += out.nbytes
            if self._reserve is not None:
                self._reserve(2 * self._held)  # the parts, then their concatenation
            self._parts.append(np.ascontiguousarray(out, dtype=np.float32))

    def finish(self) -> np.ndarray:
        if self._stream is not None:
            self.push(np.zeros((self._rows, 0), np.float32), last=True)
        if not self._parts:
            return np.zeros((self._rows, 0), np.float32)
        samples = np.concatenate(self._parts, axis=1)
        self._parts = []
        return samples


def _truncation_warnings(data: bytes, source: _Source, scan: _Scan) -> list[str]:
    """A stream that ends before it says it does: the decodable part is accepted, and the reply
    says so. WAV: the data chunk declares more bytes than follow; OGG (Vorbis, Opus): the last
    page lacks the end-of-stream flag; MP3: the Xing/Info header counts more than 1 % more frames
    than decode. FLAC that ends mid-frame fails instead (libsndfile reports lost sync)."""
    check = {"wav": _wav_short, "ogg": _ogg_unended, "opus": _ogg_unended}.get(source.format)
    reason = check(data) if check is not None else None
    if reason is None and source.format == "mp3" and source.frames is not None:
        missing = source.frames - scan.frames
        if missing > max(4608, source.frames // 100):  # beyond encoder delay and padding
            reason = f"the header counts {source.frames} frames, {scan.frames} decode"
    if reason is None:
        return []
    seconds = scan.frames / source.sample_rate
    return [f"audio is truncated ({reason}); the decodable {seconds:.2f} s were used"]


def _wav_short(data: bytes) -> str | None:
    position = 12
    while position + 8 <= len(data) and data[:4] == b"RIFF":
        chunk, size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        if chunk == b"data":
            available = len(data) - position - 8
            if 0 < size < 0xFFFFFFFF and size > available:  # 0 / max: a stream of unknown length
                return f"the data chunk declares {size} bytes, {available} follow"
            return None
        position += 8 + size + (size & 1)
    return None


def _ogg_unended(data: bytes) -> str | None:
    last = data.rfind(b"OggS")
    if last < 0 or last + 6 > len(data):
        return None
    if not data[last + 5] & 0x04:  # header_type: end of stream
        return "the last OGG page is not marked end of stream"
    return None


def _scan_block(scan: _Scan, block: np.ndarray) -> None:
    if block.size == 0:
        return
    scan.frames += block.shape[0]
    peak = float(np.max(np.abs(block)))
    if math.isfinite(peak):
        scan.peak = max(scan.peak, peak)
    else:  # NaN or Inf somewhere: count them (only then, to keep the common path one pass)
        scan.nonfinite += int(np.count_nonzero(~np.isfinite(block)))


def _mix(block: np.ndarray, target_channels: int) -> np.ndarray:
    """[n, C] float32 -> [C', n]: the module docstring's layout rules, except that mono stays one
    row for stereo output (duplicated after resampling)."""
    channels = block.shape[1]
    if channels == 1 or channels == target_channels:
        return np.ascontiguousarray(block.T, dtype=np.float32)
    if target_channels == 1:
        return block.mean(axis=1, dtype=np.float32)[None, :]
    left = block[:, 0::2].mean(axis=1, dtype=np.float32)
    right = block[:, 1::2].mean(axis=1, dtype=np.float32)
    return np.stack([left, right])


# --- checks ------------------------------------------------------------------------------------


def _check_target(target_rate: int, target_channels: int) -> None:
    """The model's layout: a server bug if wrong, never the caller's."""
    if target_channels not in (1, 2) or target_rate <= 0:
        raise ValueError(f"unsupported target layout: {target_rate} Hz, {target_channels} channels")


def _check_body(size: int, limits: AudioLimits, field: str) -> None:
    if size == 0:
        raise invalid(
            "audio body is empty (0 bytes)",
            field=field,
            allowed=f"an audio file ({', '.join(SUPPORTED_FORMATS)}) of 1 to {limits.max_bytes} bytes",
        )
    if size > limits.max_bytes:
        raise too_large(
            f"audio is {size} bytes; the limit is {limits.max_bytes}",
            field=field,
            allowed=f"at most {limits.max_bytes} bytes",
        )


def _check_source(source: _Source, limits: AudioLimits, field: str) -> None:
    """Channels, sample rate and declared duration: all known before decoding any sample."""
    if source.channels < 1:
        raise invalid("audio has no channels", field=field, allowed=f"1 to {limits.max_channels} channels")
    if source.channels > limits.max_channels:
        raise too_large(
            f"audio has {source.channels} channels; at most {limits.max_channels} are accepted",
            field=field,
            allowed=f"1 to {limits.max_channels} channels",
        )
    if not MIN_SAMPLE_RATE <= source.sample_rate <= MAX_SAMPLE_RATE:
        raise invalid(
            f"sample rate {source.sample_rate} Hz is out of range",
            field=field,
            allowed=f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
        )
    if source.frames is not None and source.frames > limits.max_seconds * source.sample_rate:
        seconds = source.frames / source.sample_rate
        raise too_large(
            f"recording is {seconds:.1f} s long; the limit is {limits.max_seconds:g} s",
            field=field,
            allowed=f"at most {limits.max_seconds:g} s of audio",
        )


def _check_content(scan: _Scan, channels: int, field: str) -> None:
    if scan.frames == 0:
        raise invalid(
            "audio decoded to zero samples", field=field, allowed="a recording with at least one sample"
        )
    if scan.nonfinite:
        total = scan.frames * channels
        raise invalid(
            f"{scan.nonfinite} of {total} samples are NaN or infinite",
            field=field,
            allowed="finite sample values",
        )
    if scan.peak > MAX_ABS_SAMPLE:
        raise invalid(
            f"sample values reach {scan.peak:.3g}, beyond +-{MAX_ABS_SAMPLE:g}",
            field=field,
            allowed=f"sample values within +-{MAX_ABS_SAMPLE:g} (full scale is +-1)",
        )
    if scan.peak < SILENCE_PEAK:
        raise invalid(
            f"recording is silent (peak {scan.peak:.3g} < {SILENCE_PEAK:g})",
            field=field,
            allowed=f"audio whose peak absolute sample is at least {SILENCE_PEAK:g}",
        )


# --- sources -----------------------------------------------------------------------------------


def _open_container(data: bytes, field: str) -> sf.SoundFile:
    """Open ``data`` with libsndfile (reads the header only)."""
    try:
        return sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as exc:
        reason = exc.error_string
        if "regular file" in reason or "unknown format" in reason.lower():  # libsndfile's guess for
            # bytes it cannot identify says "file does not exist ... (possibly a pipe?)"
            reason = f"not a recognised audio file, or its header is truncated ({len(data)} bytes)"
        raise SonovecError(
            ErrorKind.UNSUPPORTED,
            f"could not decode audio: {reason}",
            field=field,
            allowed=", ".join(SUPPORTED_FORMATS),
        ) from None


def _container_source(handle: sf.SoundFile, field: str) -> _Source:
    name = _CONTAINERS.get(handle.format)
    if name is None:
        raise SonovecError(
            ErrorKind.UNSUPPORTED,
            f"audio format {handle.format} ({handle.format_info}) is not accepted",
            field=field,
            allowed=", ".join(SUPPORTED_FORMATS),
        )
    if name == "ogg" and handle.subtype == "OPUS":
        name = "opus"
    frames = None if handle.frames >= _UNKNOWN_FRAMES else int(handle.frames)
    return _Source(int(handle.samplerate), int(handle.channels), frames, name)


def _container_blocks(handle: sf.SoundFile, field: str) -> Iterator[np.ndarray]:
    """Yield fresh [n, C] float32 blocks until libsndfile has no more."""
    while True:
        block = np.empty((BLOCK_FRAMES, handle.channels), np.float32)
        count = _read_frames(handle, block, field)
        if count == 0:
            return
        yield block[:count]


def _read_frames(handle: sf.SoundFile, out: np.ndarray, field: str) -> int:
    """Read up to ``len(out)`` frames into ``out`` [n, C] float32; return how many were read.

    Calls libsndfile directly: ``SoundFile.read`` clamps to the header's frame count and seeks
    after every read, which fails on streams whose header omits their length (a FLAC written to
    a pipe says 0) and hides where a corrupt stream broke."""
    count = int(_snd.sf_readf_float(handle._file, _ffi.cast("float *", out.ctypes.data), len(out)))
    code = _snd.sf_error(handle._file)
    if code:
        reason = _ffi.string(_snd.sf_error_number(code)).decode("utf-8", "replace")
        raise invalid(
            f"audio is corrupt or truncated: {reason}",
            field=field,
            allowed="a complete, well-formed audio file",
        )
    return count


def _pcm_source(data: bytes, pcm: PcmFormat, field: str) -> tuple[_Source, Iterator[np.ndarray]]:
    """Describe raw interleaved PCM and yield it as [n, C] float32 blocks (s16 scaled by 1/32768)."""
    dtype = _PCM_DTYPES.get(pcm.encoding)
    if dtype is None:
        raise SonovecError(
            ErrorKind.UNSUPPORTED,
            f"unknown PCM encoding {pcm.encoding!r}",
            field=field,
            allowed=", ".join(SUPPORTED_FORMATS),
        )
    frame_bytes = dtype.itemsize * max(pcm.channels, 1)  # channels < 1: refused by _check_source
    if pcm.channels >= 1 and len(data) % frame_bytes:
        raise invalid(
            f"{len(data)} bytes is not a whole number of {pcm.encoding} frames of {pcm.channels} channels",
            field=field,
            allowed=f"a multiple of {frame_bytes} bytes",
        )
    frames = len(data) // frame_bytes
    source = _Source(int(pcm.sample_rate), int(pcm.channels), frames, f"pcm_{pcm.encoding}")
    return source, _pcm_blocks(data, dtype, source)


def _pcm_blocks(data: bytes, dtype: np.dtype, source: _Source) -> Iterator[np.ndarray]:
    interleaved = np.frombuffer(data, dtype=dtype).reshape(-1, source.channels)
    scale = np.float32(1 / 32768) if dtype.kind == "i" else np.float32(1)
    for start in range(0, interleaved.shape[0], BLOCK_FRAMES):
        yield interleaved[start : start + BLOCK_FRAMES].astype(np.float32) * scale


def _as_channels_first(samples: np.ndarray, field: str) -> np.ndarray:
    """``samples`` as [C, T]: floating point only, since integer arrays have no agreed scale."""
    array = np.asarray(samples)
    if array.dtype.kind != "f":
        raise invalid(
            f"array dtype {array.dtype} is not floating point",
            field=field,
            allowed="a float32 or float64 array, [C, T] or [T]",
        )
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise invalid(
            f"array has shape {array.shape}",
            field=field,
            allowed="a float array shaped [C, T] or [T]",
        )
    return array
