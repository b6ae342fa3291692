"""Where EnCodec weights come from, and the fingerprint that names the embedding space they define.

``weights`` is one of:

- ``"pretrained"``: the hub cache (``cache_dir`` if given, then ``torch.hub.get_dir()/checkpoints``),
  else a download from encodec's URL; files are checked against the sha256 prefix in their name;
- a directory holding the checkpoint file (``encodec_24khz-d7cc33bc.th``, ``encodec_48khz-7e698e3e.th``),
  looked at first, then the same chain as ``"pretrained"``;
- ``"random"``: no checkpoint; the model is built right after ``torch.manual_seed(0)`` (on a forked
  RNG: the caller's stream is untouched) and its codebooks are drawn from a seeded generator (see
  ``_init_random_codebooks``), so every process and replica gets the same random model, which its
  fingerprint proves. Embeddings from it are meaningless: for tests and benchmarks only.

The fingerprint hashes the tensors themselves, so the same checkpoint gives the same fingerprint
wherever it was found, and a torch release that initialises differently gives a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sonovec.models._compat import import_encodec
from sonovec.models.base import WeightsInfo

if TYPE_CHECKING:
    from encodec import EncodecModel  # untyped package: Any to mypy

logger = logging.getLogger(__name__)

encodec = import_encodec()  # with a torchaudio stand-in where torchaudio does not import

CHECKPOINTS = {
    "encodec_24khz": "encodec_24khz-d7cc33bc.th",
    "encodec_48khz": "encodec_48khz-7e698e3e.th",
}
RANDOM_SEED = 0
RANDOM_WARNING = (
    "RANDOM-INIT WEIGHTS: embeddings are meaningless (no trained checkpoint was loaded); "
    "use them only to test and benchmark the service, never to compare or index real audio."
)

StateDict = dict[str, torch.Tensor]


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded or verified."""


def checkpoint_name(model_name: str) -> str:
    try:
        return CHECKPOINTS[model_name]
    except KeyError:
        known = ", ".join(CHECKPOINTS)
        raise ValueError(f"no checkpoint known for model {model_name!r}; known: {known}") from None


def checkpoint_url(model_name: str) -> str:
    return encodec.model.ROOT_URL.rstrip("/") + "/" + checkpoint_name(model_name)


def fingerprint(state_dict: StateDict) -> str:
    """16 hex chars of sha256 over (name, shape, dtype, bytes) of every tensor, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        # A uint8 view hashes any dtype (bf16 has no numpy type) without copying contiguous tensors.
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def new_model(model_name: str, seed: int | None = None) -> EncodecModel:
    """An untrained ``EncodecModel`` from encodec's own constructors; seeded and usable if ``seed``."""
    constructors = {
        "encodec_24khz": "encodec_model_24khz",
        "encodec_48khz": "encodec_model_48khz",
    }
    checkpoint_name(model_name)  # validates the name
    # fork_rng: seeding must not reset the caller's global RNG stream. One thread: weight norm's g and
    # the codebooks come from reductions whose float rounding depends on how many threads split them,
    # and the same seed must give the same bits (the same fingerprint) whatever --threads says.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), torch_threads(1):
        if seed is not None:
            torch.manual_seed(seed)
        # encodec wraps every conv in the deprecated torch.nn.utils.weight_norm; nothing we can act on.
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        model = getattr(encodec.EncodecModel, constructors[model_name])(pretrained=False)
        if seed is not None:
            _init_random_codebooks(model, seed)
    return model.eval()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's process-wide intra-op threads set to ``count`` inside, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_random_codebooks(model: EncodecModel, seed: int) -> None:
    """Give an untrained model codebooks that its latents actually spread over.

    encodec builds codebooks for k-means initialisation on the first *training* batch: all zeros until
    then, so every code of a fresh model is 0 and decoding is constant. A random encoder's latents are
    a large constant offset plus a small variation over time (24 kHz: 0.023 vs 0.0013), so we place
    Gaussian codewords where k-means would roughly put them: the first codebook around the mean latent
    of a seeded probe (1 s of noise at levels from -40 to -6 dBFS), every codebook with the probe's
    per-dimension spread over time.
    """
    generator = torch.Generator().manual_seed(seed)
    block = model.sample_rate // 10
    levels = torch.empty(10).uniform_(math.log(0.01), math.log(0.5), generator=generator).exp()
    probe = torch.randn(1, model.channels, 10 * block, generator=generator) * levels.repeat_interleave(block)
    if model.normalize:
        probe = probe / probe.mean(dim=1).pow(2).mean().sqrt()
    with torch.no_grad():
        latents = model.encoder(probe)[0]  # [D, F]
    center, spread = latents.mean(dim=1), latents.std(dim=1)  # [D]
    for index, layer in enumerate(model.quantizer.vq.layers):
        codebook = layer._codebook
        embed = spread * torch.randn(codebook.embed.shape, generator=generator)  # [bins, D]
        if index == 0:
            embed += center
        codebook.embed.copy_(embed)
        codebook.embed_avg.copy_(embed)
        codebook.inited.fill_(1.0)


def random_info(model_name: str, model: EncodecModel) -> WeightsInfo:
    return WeightsInfo(
        source=f"random:seed={RANDOM_SEED}",
        fingerprint=f"random-{fingerprint(model.state_dict())}",
        pretrained=False,
        warning=RANDOM_WARNING,
    )


def resolve_state_dict(
    model_name: str, weights: str, cache_dir: str | Path | None = None
) -> tuple[StateDict | None, WeightsInfo]:
    """The checkpoint ``weights`` names for ``model_name``, verified, and what it is.

    Returns ``(None, info)`` for ``"random"``: build the model with ``new_model(name, RANDOM_SEED)``.
    """
    if weights == "random":
        return None, random_info(model_name, new_model(model_name, seed=RANDOM_SEED))
    name = checkpoint_name(model_name)
    directory = Path(weights) if weights != "pretrained" else None
    if directory is not None and not directory.is_dir():
        raise WeightsError(
            f"weights must be 'pretrained', 'random' or an existing directory holding {name}; got {weights!r}"
        )
    candidates = [d / name for d in _local_dirs(directory, cache_dir)]
    for path in candidates:
        if path.is_file():
            state_dict = _load_verified(path)
            return state_dict, _pretrained_info(model_name, f"pretrained:{path}", state_dict)
    url = checkpoint_url(model_name)
    download_dir = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state_dict = torch.hub.load_state_dict_from_url(
            url, model_dir=str(download_dir), map_location="cpu", check_hash=True, weights_only=True
        )
    except Exception as error:
        tried = "".join(f"\n  - {path} (not found)" for path in candidates)
        raise WeightsError(
            f"cannot find the {model_name} checkpoint {name}. Tried:{tried}\n"
            f"  - download {url} -> {download_dir}: {type(error).__name__}: {error}\n"
            f"Fix: put {name} in a directory and pass that directory as the weights "
            "(--weights /path/to/dir), or pass --weights random for an explicitly random-init model "
            "(meaningless embeddings, for tests only)."
        ) from error
    return state_dict, _pretrained_info(model_name, f"pretrained:{url}", state_dict)


def _local_dirs(directory: Path | None, cache_dir: str | Path | None) -> list[Path]:
    dirs = [directory] if directory is not None else []
    if cache_dir is not None:
        dirs.append(Path(cache_dir))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return list(dict.fromkeys(dirs))  # ordered, without duplicates


def _load_verified(path: Path) -> StateDict:
    """Load ``path`` after checking its sha256 against the hex prefix in its name (``name-<hex>.th``)."""
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    actual = digest.hexdigest()[: len(expected)]
    if actual != expected:
        raise WeightsError(
            f"checksum mismatch for {path}: its name promises sha256 {expected}..., the file hashes to "
            f"{actual}...; the file is corrupt, truncated or not the EnCodec checkpoint. Delete it and "
            "fetch it again."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _pretrained_info(model_name: str, source: str, state_dict: StateDict) -> WeightsInfo:
    return WeightsInfo(source=source, fingerprint=f"{model_name}-{fingerprint(state_dict)}", pretrained=True)


def load_model(
    model_name: str, weights: str, cache_dir: str | Path | None = None
) -> tuple[EncodecModel, WeightsInfo]:
    """Build ``model_name`` with ``weights`` (see the module doc): ``(EncodecModel in eval mode, info)``."""
    if weights == "random":
        model = new_model(model_name, seed=RANDOM_SEED)
        info = random_info(model_name, model)
        logger.warning("%s: %s (fingerprint %s)", model_name, RANDOM_WARNING, info.fingerprint)
        return model, info
    state_dict, info = resolve_state_dict(model_name, weights, cache_dir)
    assert state_dict is not None  # only "random" has none
    model = new_model(model_name)
    model.load_state_dict(state_dict)
    logger.info("%s: loaded %s (fingerprint %s)", model_name, info.source, info.fingerprint)
    return model.eval(), info

