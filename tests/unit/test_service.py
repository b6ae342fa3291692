"""The core service over the fake backend: windows, batching, pooling, cache, codes, similarity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
from audiofiles import encode, tone

from sonovec.models import plan_windows
from sonovec.server.batcher import BatchKey
from sonovec.server.core import AudioSource, EmbedOptions, Service, published_limits
from sonovec.server.errors import ErrorKind, SonovecError

# Clip lengths around the 48 kHz window (1 s, stride 0.99 s) and the 24 kHz chunk (10 s).
LENGTHS_S = [0.05, 0.3, 0.99, 1.0, 1.2, 2.0, 3.7, 10.0, 12.5]


def metric(service, name: str, labels: dict[str, str]) -> float:  # type: ignore[no-untyped-def]
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def wav(seconds: float, sr: int = 44_100, channels: int = 2, seed: int = 0) -> AudioSource:
    return AudioSource(data=encode(tone(seconds, sr, channels, seed=seed), sr, "wav_float"))


@pytest.mark.parametrize("model", ["encodec_48khz", "encodec_24khz"])
async def test_concurrent_batched_requests_equal_each_request_alone(make_service, model: str) -> None:
    together = make_service(max_wait_ms=50.0)
    alone = make_service(max_batch_seconds=0.001)  # budget of one window: no cross-request batching
    sources = [wav(s, seed=i) for i, s in enumerate(LENGTHS_S * 2)]  # 18 concurrent requests
    options = EmbedOptions(model=model, pooling="mean_std", frames=True)
    batched = await asyncio.gather(*(together.embed(s, options) for s in sources))
    single = [await alone.embed(s, options) for s in sources]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b.frames, s.frames, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(b.vector, s.vector, rtol=1e-6, atol=1e-6)
    labels = {"model": model, "op": "encode"}
    assert (
        metric(together, "sonovec_batch_windows_sum", labels)
        / metric(together, "sonovec_batch_windows_count", labels)
        > 1.5
    )


async def test_several_workers_give_the_results_of_one(make_service) -> None:
    """--workers 2 (batches side by side: see the batcher's barrier test): every request still gets
    its own windows back, in order."""
    one = make_service(max_batch_seconds=2.0, fake_seconds_per_audio_second=0.002)
    two = make_service(max_batch_seconds=2.0, fake_seconds_per_audio_second=0.002, workers=2)
    sources = [wav(s, seed=i) for i, s in enumerate(LENGTHS_S * 2)]
    options = EmbedOptions(pooling="mean_std", frames=True)
    first = await asyncio.gather(*(one.embed(s, options) for s in sources))
    second = await asyncio.gather(*(two.embed(s, options) for s in sources))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.vector, b.vector)


async def test_frames_follow_the_window_plan(make_service) -> None:
    service = make_service()
    result = await service.embed(wav(2.5, sr=48_000), EmbedOptions(frames=True, normalize=False))
    spec = service.backends["encodec_48khz"].spec
    windows = plan_windows(spec, 120_000)
    assert [w.length for w in windows] == [48_000, 48_000, 120_000 - 2 * 47_520]
    assert result.frames.shape == (150 + 150 + 78, 128)  # ceil(24_960 / 320) = 78
    assert result.num_windows == 3
    assert np.all(np.diff(result.frame_times[:150]) > 0) and result.frame_times[150] == pytest.approx(0.99)
    np.testing.assert_allclose(result.vector, result.frames.mean(axis=0), rtol=1e-5, atol=1e-6)


async def test_pooling_options(make_service) -> None:
    service = make_service()
    mean = await service.embed(wav(1.5), EmbedOptions(pooling="mean"))
    both = await service.embed(wav(1.5), EmbedOptions(pooling="mean_std", normalize=False))
    assert mean.vector.shape == (128,) and both.vector.shape == (256,)
    assert np.linalg.norm(mean.vector) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(mean.vector, both.vector[:128] / np.linalg.norm(both.vector[:128]), rtol=1e-5)
    with pytest.raises(SonovecError) as err:
        await service.embed(wav(1.0), EmbedOptions(pooling="max"))
    assert err.value.kind is ErrorKind.INVALID and "mean_std" in err.value.allowed


async def test_cache_returns_the_identical_vector_without_the_model(make_service) -> None:
    service = make_service()
    first = await service.embed(wav(2.0), EmbedOptions())
    labels = {"model": "encodec_48khz", "op": "encode"}
    calls = metric(service, "sonovec_batch_windows_count", labels)
    second = await service.embed(wav(2.0), EmbedOptions())
    assert not first.cached and second.cached
    assert np.array_equal(first.vector, second.vector)
    assert metric(service, "sonovec_batch_windows_count", labels) == calls
    other = await service.embed(wav(2.0, seed=1), EmbedOptions())
    assert not other.cached


@pytest.mark.parametrize(
    ("model", "seconds"),
    [("encodec_48khz", 2.3), ("encodec_48khz", 1.0), ("encodec_24khz", 0.4), ("encodec_24khz", 23.0)],
)
async def test_encode_then_decode_gives_the_input_length(make_service, model: str, seconds: float) -> None:
    service = make_service()
    encoded = await service.encode(wav(seconds), model=model, bandwidth=6.0)
    spec = service.backends[model].spec
    assert encoded.num_samples == round(seconds * spec.sample_rate)
    assert all(c.shape[0] == spec.num_codebooks(6.0) for c in encoded.codes)
    decoded = await service.decode(
        encoded.codes, encoded.scales, model=model, num_samples=encoded.num_samples
    )
    assert decoded.audio.shape == (spec.channels, encoded.num_samples)
    derived = await service.decode(encoded.codes, encoded.scales, model=model)
    assert derived.audio.shape[1] >= encoded.num_samples


@pytest.mark.parametrize(
    ("codes", "scales", "num_samples", "field"),
    [
        ([np.zeros((3, 150), int)], None, None, "codes"),  # K=3 is no bandwidth of the 48 kHz model
        ([np.full((4, 150), 1024)], None, None, "codes"),  # outside the codebook
        ([np.zeros((4, 100)), np.zeros((4, 150))], None, None, "codes"),  # short segment before the last
        ([np.zeros((4, 150), int)], [1.0, 2.0], None, "scales"),
        ([np.zeros((4, 150), int)], [float("nan")], None, "scales"),
        ([np.zeros((4, 150), int)], None, 10, "num_samples"),
        ([], None, None, "codes"),
    ],
)
async def test_decode_rejects_codes_that_do_not_fit_the_model(
    make_service, codes, scales, num_samples, field
) -> None:
    service = make_service()
    with pytest.raises(SonovecError) as err:
        await service.decode(codes, scales, model="encodec_48khz", num_samples=num_samples)
    assert err.value.kind is ErrorKind.INVALID and err.value.field == field and err.value.allowed


async def test_encode_rejects_a_bandwidth_the_model_lacks(make_service) -> None:
    service = make_service()
    with pytest.raises(SonovecError) as err:
        await service.encode(wav(1.0), model="encodec_48khz", bandwidth=1.5)
    assert err.value.kind is ErrorKind.INVALID and err.value.allowed == "3, 6, 12, 24"


async def test_similarity_between_recordings(make_service) -> None:
    service = make_service()
    result = await service.similarity([wav(1.5), wav(1.5), wav(1.5, seed=3, sr=22_050)], EmbedOptions())
    assert result.matrix.shape == (3, 3)
    assert result.matrix[0, 1] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(np.diag(result.matrix), 1.0, atol=1e-5)
    with pytest.raises(SonovecError) as err:
        await service.similarity([wav(1.0)], EmbedOptions())
    assert err.value.field == "recordings"


async def test_self_similarity_segments(make_service) -> None:
    service = make_service()
    result = await service.self_similarity(wav(4.5), segment_seconds=1.0)
    assert result.matrix.shape == (5, 5)
    np.testing.assert_allclose(result.segment_starts_s, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(np.diag(result.matrix), 1.0, atol=1e-5)
    with pytest.raises(SonovecError):
        await service.self_similarity(wav(1.0), segment_seconds=0.0001)


async def test_unknown_model_is_not_found(make_service) -> None:
    with pytest.raises(SonovecError) as err:
        await make_service().embed(wav(1.0), EmbedOptions(model="wav2vec"))
    assert err.value.kind is ErrorKind.NOT_FOUND and "encodec_48khz" in err.value.allowed


async def test_a_deadline_passed_in_the_queue_fails_only_that_request(make_service) -> None:
    service = make_service(max_wait_ms=0.0)
    backend = service.backends["encodec_48khz"]
    slow_encode = backend.encode

    def slow(audio, **options):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return slow_encode(audio, **options)

    backend.encode = slow  # type: ignore[method-assign]
    late = asyncio.create_task(service.embed(wav(3.0), EmbedOptions(timeout_s=0.1)))
    fine = asyncio.create_task(service.embed(wav(1.0, seed=2), EmbedOptions()))
    with pytest.raises(SonovecError) as err:
        await late
    assert err.value.kind is ErrorKind.DEADLINE
    assert (await fine).vector.shape == (128,)


async def test_a_failing_model_fails_its_requests_and_the_service_recovers(make_service) -> None:
    service = make_service()
    backend = service.backends["encodec_48khz"]
    real = backend.encode
    backend.encode = lambda audio, **_: (_ for _ in ()).throw(RuntimeError("device lost"))  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(service.embed(wav(1.0, seed=i), EmbedOptions()) for i in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, SonovecError) and r.kind is ErrorKind.INTERNAL for r in results)
    backend.encode = real  # type: ignore[method-assign]
    assert (await service.embed(wav(1.0), EmbedOptions())).vector.shape == (128,)


async def test_draining_refuses_new_requests(make_runtime) -> None:
    runtime = make_runtime()
    service = runtime.service
    await runtime.drain()
    with pytest.raises(SonovecError) as err:
        await service.embed(wav(1.0), EmbedOptions())
    assert err.value.kind is ErrorKind.UNAVAILABLE


def test_each_model_batches_its_own_default_budget(make_service: Callable[..., Service]) -> None:
    """24 kHz windows are 12 s chunks: a 16 s budget would hold one or two (a core idles), so that
    model's default is 64 s; a set ``max_batch_seconds`` applies to every model."""
    service = make_service(models=["encodec_24khz", "encodec_48khz"])
    budget = service.batcher.budget
    assert budget(BatchKey("encodec_48khz", "encode")) == 16.0
    assert budget(BatchKey("encodec_24khz", "encode")) == 64.0
    assert published_limits(service.settings)["max_batch_seconds"] == 64.0
    pinned = make_service(models=["encodec_24khz", "encodec_48khz"], max_batch_seconds=8.0)
    assert {pinned.batcher.budget(BatchKey(m, "quantize", 6.0)) for m in pinned.backends} == {8.0}
