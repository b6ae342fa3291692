"""Same inputs, same outputs: every method over REST and gRPC equals the core called directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from audiofiles import tone

from sonovec.client import AudioData, Client, SonovecClientError
from sonovec.server.core import AudioSource, EmbedOptions
from sonovec.server.settings import Settings

from .conftest import LIMITS, Reference, assert_same_array, clip

pytestmark = pytest.mark.contract

CLIP = clip(2.5, 44_100, 2, seed=1)


def test_embed_bytes_path_and_array(client: Client, reference: Reference, tmp_path: Path) -> None:
    want = reference.run(lambda s: s.embed(AudioSource(data=CLIP), EmbedOptions()))
    path = tmp_path / "clip.wav"
    path.write_bytes(CLIP)
    for audio in (CLIP, path, str(path)):
        got = client.embed(audio)
        assert_same_array(got.vector, want.vector)
        assert got.model.weights_fingerprint == want.model.weights_fingerprint
        assert got.model.pretrained is False and got.model.warning == want.model.warning
        assert (got.duration_s, got.num_windows, got.pooling, got.normalized) == (
            want.duration_s,
            want.num_windows,
            "mean",
            True,
        )

    samples = tone(1.5, 32_000, 2, seed=2)  # an array goes as raw float32 PCM
    pcm = np.ascontiguousarray(samples.T).tobytes()
    source = AudioSource(data=pcm, pcm=_pcm(32_000, 2))
    want = reference.run(lambda s: s.embed(source, EmbedOptions()))
    assert_same_array(client.embed(samples, sample_rate=32_000).vector, want.vector)
    assert_same_array(client.embed(AudioData(pcm, "pcm_f32le", 32_000, 2)).vector, want.vector)


def _pcm(rate: int, channels: int):  # type: ignore[no-untyped-def]
    from sonovec.server.audio import PcmFormat

    return PcmFormat("f32le", rate, channels)


@pytest.mark.parametrize("model", ["encodec_48khz", "encodec_24khz"])
def test_embed_options_and_frames(client: Client, reference: Reference, model: str) -> None:
    options = EmbedOptions(model, "mean_std", normalize=False, frames=True)
    want = reference.run(lambda s: s.embed(AudioSource(data=CLIP), options))
    got = client.embed(CLIP, model=model, pooling="mean_std", normalize=False, frames=True)
    assert got.vector.shape == (2 * want.model.latent_dim,)
    assert_same_array(got.vector, want.vector)
    assert got.frames is not None and got.frame_times_s is not None
    assert_same_array(got.frames, want.frames)
    assert_same_array(got.frame_times_s, want.frame_times)
    assert got.model.name == model


def test_encode_and_decode(client: Client, reference: Reference) -> None:
    want = reference.run(lambda s: s.encode(AudioSource(data=CLIP), model=None, bandwidth=12.0))
    codes = client.encode(CLIP, bandwidth=12.0)
    assert len(codes.segments) == len(want.codes)
    for got_segment, want_segment in zip(codes.segments, want.codes, strict=True):
        assert_same_array(got_segment, want_segment)
    assert codes.scales == want.scales
    assert (codes.num_samples, codes.segment_stride, codes.num_codebooks) == (
        want.num_samples,
        want.segment_stride,
        want.codes[0].shape[0],
    )

    decoded = reference.run(
        lambda s: s.decode(want.codes, want.scales, model=None, num_samples=want.num_samples)
    )
    for subtype in ("PCM_16", "FLOAT"):
        audio = client.decode(codes, subtype=subtype)
        assert audio.wav == decoded.wav_bytes(subtype)  # the very same WAV file
        assert audio.sample_rate == 48_000 and audio.audio.shape == decoded.audio.shape
    np.testing.assert_array_equal(client.decode(codes, subtype="FLOAT").audio, decoded.audio)


def test_decode_from_plain_arrays(client: Client) -> None:
    codes = client.encode(CLIP, model="encodec_24khz", bandwidth=1.5)
    audio = client.decode([codes.segments[0]], model="encodec_24khz", num_samples=codes.num_samples)
    assert audio.audio.shape == (1, codes.num_samples) and audio.model_name == "encodec_24khz"


def test_similarity_and_self_similarity(client: Client, reference: Reference) -> None:
    recordings = [clip(1.0, 16_000, 1, seed=s) for s in (3, 4, 5)]
    sources = [AudioSource(data=r) for r in recordings]
    want = reference.run(lambda s: s.similarity(sources, EmbedOptions(pooling="mean_std")))
    got = client.similarity(recordings, pooling="mean_std")
    assert_same_array(got.matrix, want.matrix)

    long = clip(6.0, 22_050, 1, seed=6)
    want_self = reference.run(lambda s: s.self_similarity(AudioSource(data=long), segment_seconds=1.5))
    got_self = client.self_similarity(long, segment_seconds=1.5)
    assert_same_array(got_self.matrix, want_self.matrix)
    assert_same_array(got_self.segment_starts_s, want_self.segment_starts_s)
    assert got_self.segment_seconds == 1.5


def test_models_and_limits_are_the_same(client: Client, reference: Reference) -> None:
    models = client.models()
    settings: Settings = reference.service.settings
    assert models.default_model == "encodec_48khz" and models.random_weights
    assert [m.name for m in models.models] == list(reference.service.infos)
    for got in models.models:
        want = reference.service.infos[got.name]
        assert got.weights_fingerprint == want.weights_fingerprint and got.bandwidths == want.bandwidths
    limits = models.limits
    assert limits.max_request_bytes == LIMITS["max_request_bytes"] == settings.max_request_bytes
    assert (limits.max_audio_seconds, limits.max_recordings) == (20.0, 8)
    assert "flac" in limits.formats and "pcm_f32le" in limits.formats
    info = client.info()
    assert info.limits == limits
    if client.transport == "grpc":  # message limits: the audio limit plus headroom, reported
        assert info.max_receive_message_bytes == LIMITS["max_request_bytes"] + (1 << 20)
        assert info.max_chunk_bytes and info.max_chunk_bytes < info.max_receive_message_bytes
        assert info.auth_required and "embed_stream" in info.features


def test_large_audio_streams_in_chunks(make_client, reference: Reference) -> None:  # type: ignore[no-untyped-def]
    # Over stream_bytes the gRPC client uses EmbedStream (REST has one body): same vector.
    big = clip(10.0, 44_100, 2, seed=7)  # 1.76 MB: under the 2 MiB limit, 28 chunks of 64 KiB
    assert len(big) < LIMITS["max_request_bytes"]
    client = make_client(stream_bytes=256 << 10, chunk_bytes=64 << 10)
    want = reference.run(lambda s: s.embed(AudioSource(data=big), EmbedOptions()))
    assert_same_array(client.embed(big).vector, want.vector)


def test_embed_many_keeps_order_and_fails_only_bad_items(make_client, reference: Reference) -> None:  # type: ignore[no-untyped-def]
    audios: list[object] = [clip(0.5 + 0.1 * i, 16_000, 1, seed=20 + i) for i in range(11)]
    audios[4] = b"not audio at all"
    audios[7] = b"\x00" * (LIMITS["max_request_bytes"] + 1)  # refused by the client, never sent
    client = make_client()
    results = client.embed_many(audios, concurrency=3, progress=False, return_exceptions=True)
    assert len(results) == len(audios)
    for i, result in enumerate(results):
        if i == 4:
            assert isinstance(result, SonovecClientError) and result.kind == "unsupported_media_type"
        elif i == 7:
            assert isinstance(result, SonovecClientError) and result.kind == "payload_too_large"
            assert result.status is None
        else:
            want = reference.run(lambda s, a=audios[i]: s.embed(AudioSource(data=a), EmbedOptions()))
            assert_same_array(result.vector, want.vector)
    with pytest.raises(SonovecClientError) as raised:
        client.embed_many(audios[:5], progress=False)
    assert raised.value.kind == "unsupported_media_type"


def test_async_client_is_the_same(async_client_factory, reference: Reference) -> None:  # type: ignore[no-untyped-def]
    recordings = [clip(1.0, 16_000, 1, seed=30 + i) for i in range(4)]

    async def run() -> list[np.ndarray]:
        async with async_client_factory() as client:
            embeddings = await asyncio.gather(*(client.embed(r) for r in recordings))
            many = await client.embed_many(recordings, progress=False)
            assert [e.vector.tolist() for e in many] == [e.vector.tolist() for e in embeddings]
            return [e.vector for e in embeddings]

    for got, audio in zip(asyncio.run(run()), recordings, strict=True):
        want = reference.run(lambda s, a=audio: s.embed(AudioSource(data=a), EmbedOptions()))
        assert_same_array(got, want.vector)
