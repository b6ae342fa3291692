"""Run by test_v2_protocol.py in a virtualenv of its own with tritonclient[http,grpc] (its protobuf
pin, <7, conflicts with ours): the protocol's own clients against a live sonovec. Prints one JSON
object: the vectors each way gave, and the errors each bad request got.

    python v2_tritonclient.py HTTP_HOST:PORT GRPC_HOST:PORT API_KEY WAV WAVEFORM.npy
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "encodec_48khz_embed"


def audio_input(module: Any, wav: bytes, binary: bool) -> Any:
    tensor = module.InferInput("AUDIO", [1], "BYTES")
    data = np.array([wav], dtype=np.object_)
    tensor.set_data_from_numpy(
        data, binary_data=binary
    ) if module is httpclient else tensor.set_data_from_numpy(data)
    return tensor


def wave_input(module: Any, wave: np.ndarray, binary: bool, datatype: str = "FP32") -> Any:
    tensor = module.InferInput("WAVEFORM", list(wave.shape), datatype)
    if module is httpclient:
        tensor.set_data_from_numpy(wave, binary_data=binary)
    else:
        tensor.set_data_from_numpy(wave)
    return tensor


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message()}
    return {"status": "OK", "message": ""}


def bad_requests(module: Any, client: Any, wave: np.ndarray, headers: dict[str, str]) -> dict[str, Any]:
    """What a wrong shape, a wrong dtype, an unknown model and a missing key get."""
    flat = wave[0, 0]  # rank 1: [T], not [N, T]
    wave64 = wave.astype(np.float64)
    return {
        "shape": error_of(
            lambda: client.infer(MODEL, [wave_input(module, flat, True)], headers=dict(headers))
        ),
        "dtype": error_of(
            lambda: client.infer(MODEL, [wave_input(module, wave64, True, "FP64")], headers=dict(headers))
        ),
        "model": error_of(
            lambda: client.infer("no_such_model", [wave_input(module, wave, True)], headers=dict(headers))
        ),
        "key": error_of(lambda: client.infer(MODEL, [wave_input(module, wave, True)])),
    }


def main() -> None:
    http_url, grpc_url, key, wav_path, wave_path = sys.argv[1:6]
    with open(wav_path, "rb") as file:
        wav = file.read()
    wave = np.load(wave_path)  # [1, C, T] float32 at 48 kHz
    headers = {"x-api-key": key}  # passed as copies: tritonclient.http writes its own headers into the dict
    http = httpclient.InferenceServerClient(http_url)
    grpc = grpcclient.InferenceServerClient(grpc_url)
    out: dict[str, Any] = {"vectors": {}, "errors": {}, "meta": {}}

    out["meta"]["http_ready"] = http.is_server_ready() and http.is_model_ready(MODEL, headers=dict(headers))
    out["meta"]["grpc_ready"] = grpc.is_server_ready() and grpc.is_model_ready(MODEL, headers=dict(headers))
    out["meta"]["http_metadata"] = http.get_model_metadata(MODEL, headers=dict(headers))
    out["meta"]["http_config"] = http.get_model_config(MODEL, headers=dict(headers))
    grpc_config = grpc.get_model_config(MODEL, headers=dict(headers), as_json=True)
    out["meta"]["grpc_config"] = grpc_config
    out["meta"]["grpc_metadata"] = grpc.get_model_metadata(MODEL, headers=dict(headers), as_json=True)

    def http_embed(inp: Any, binary_out: bool) -> list[float]:
        result = http.infer(
            MODEL,
            [inp],
            outputs=[httpclient.InferRequestedOutput("EMBEDDING", binary_data=binary_out)],
            headers=dict(headers),
        )
        return result.as_numpy("EMBEDDING")[0].astype(float).tolist()

    def grpc_embed(inp: Any) -> list[float]:
        result = grpc.infer(MODEL, [inp], headers=dict(headers))
        return result.as_numpy("EMBEDDING")[0].astype(float).tolist()

    vectors = out["vectors"]
    vectors["http_binary_audio"] = http_embed(audio_input(httpclient, wav, True), True)
    vectors["http_binary_waveform"] = http_embed(wave_input(httpclient, wave, True), True)
    vectors["http_json_waveform"] = http_embed(wave_input(httpclient, wave, False), False)
    vectors["grpc_audio"] = grpc_embed(audio_input(grpcclient, wav, True))
    vectors["grpc_waveform"] = grpc_embed(wave_input(grpcclient, wave, True))

    for name, module, client in (("http", httpclient, http), ("grpc", grpcclient, grpc)):
        for case, error in bad_requests(module, client, wave, headers).items():
            out["errors"][f"{name}_{case}"] = error
    print(json.dumps(out))


if __name__ == "__main__":
    main()
