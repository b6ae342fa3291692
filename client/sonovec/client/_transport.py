"""Four small transports (HTTP and gRPC, sync and async) that run an ``Op`` and map failures to
``SonovecClientError``. The URL scheme picks one: ``http://``, ``https://``, ``grpc://``, ``grpcs://``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import grpc.aio
import httpx

from sonovec.client import _errors as kinds
from sonovec.client import _rest as rest
from sonovec.client import _rpc as rpc
from sonovec.client._errors import SonovecClientError
from sonovec.client._ops import HttpSpec, Op, Wire
from sonovec.v1 import sonovec_pb2 as spb
from sonovec.v1 import sonovec_pb2_grpc as spb_grpc

T = TypeVar("T")

# Extra seconds the HTTP client waits beyond the deadline it gives the server, so that the
# server's own 504 (with its reason) arrives before the client gives up.
HTTP_GRACE_S = 5.0


@dataclass(frozen=True)
class Endpoint:
    transport: str  # "http" or "grpc"
    address: str  # base URL (http) or host:port (grpc)
    tls: bool


def parse_url(url: str) -> Endpoint:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return Endpoint("http", url.rstrip("/"), scheme == "https")
    if scheme in ("grpc", "grpcs"):
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        port = parts.port or (443 if scheme == "grpcs" else 50051)
        return Endpoint("grpc", f"{host}:{port}", scheme == "grpcs")
    raise ValueError(f"unsupported URL scheme in {url!r}; use http://, https://, grpc:// or grpcs://")


@dataclass(frozen=True)
class Config:
    url: str
    api_key: str | None = None
    timeout: float | None = 60.0
    max_message_bytes: int = 1 << 30
    wire: Wire = Wire()
    verify: bool = True

    @property
    def endpoint(self) -> Endpoint:
        return parse_url(self.url)


# --- HTTP --------------------------------------------------------------------------------------


def _http_headers(config: Config) -> dict[str, str]:
    headers = {"user-agent": "sonovec-client/0.1"}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"
    return headers


def _http_request(spec: HttpSpec[Any], timeout: float | None) -> dict[str, Any]:
    body = spec.json
    if body is not None and timeout is not None and spec.takes_timeout:
        body = {**body, "timeout_s": timeout}
    return {
        "method": spec.method,
        "url": spec.path,
        "json": body,
        "params": spec.params,
        "timeout": None if timeout is None else timeout + HTTP_GRACE_S,
    }


def _http_failure(exc: httpx.HTTPError, address: str) -> SonovecClientError:
    if isinstance(exc, httpx.TimeoutException):
        return SonovecClientError(kinds.DEADLINE, f"no reply from {address} in time: {exc!r}")
    return SonovecClientError(kinds.UNAVAILABLE, f"cannot reach {address}: {exc!r}")


def _http_result(spec: HttpSpec[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise rest.error(response)
    return spec.parse(response)


class HttpTransport:
    name = "http"

    def __init__(self, config: Config) -> None:
        self.address = config.endpoint.address
        self._client = httpx.Client(
            base_url=self.address, headers=_http_headers(config), verify=config.verify, timeout=config.timeout
        )

    def call(self, op: Op[T], timeout: float | None) -> T:
        spec = op.http()
        try:
            response = self._client.request(**_http_request(spec, timeout))
        except httpx.HTTPError as exc:
            raise _http_failure(exc, self.address) from None
        return _http_result(spec, response)

    def close(self) -> None:
        self._client.close()


class AsyncHttpTransport:
    name = "http"

    def __init__(self, config: Config) -> None:
        self.address = config.endpoint.address
        self._client = httpx.AsyncClient(
            base_url=self.address, headers=_http_headers(config), verify=config.verify, timeout=config.timeout
        )

    async def call(self, op: Op[T], timeout: float | None) -> T:
        spec = op.http()
        try:
            response = await self._client.request(**_http_request(spec, timeout))
        except httpx.HTTPError as exc:
            raise _http_failure(exc, self.address) from None
        return _http_result(spec, response)

    async def close(self) -> None:
        await self._client.aclose()


# --- gRPC --------------------------------------------------------------------------------------


def _grpc_options(config: Config) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.primary_user_agent", "sonovec-client/0.1"),
    ]


def _grpc_metadata(config: Config) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {config.api_key}"),) if config.api_key else ()


def _grpc_channel(channels: Any, config: Config) -> Any:
    """A channel from ``channels``, ``grpc`` or ``grpc.aio`` (the same calls): TLS for grpcs://."""
    endpoint = config.endpoint
    options = _grpc_options(config)
    if endpoint.tls:
        return channels.secure_channel(endpoint.address, grpc.ssl_channel_credentials(), options)
    return channels.insecure_channel(endpoint.address, options)


class GrpcTransport:
    name = "grpc"

    def __init__(self, config: Config) -> None:
        self.address = config.endpoint.address
        self._wire = config.wire
        self._metadata = _grpc_metadata(config)
        self._channel = _grpc_channel(grpc, config)
        self._stub = spb_grpc.SonovecStub(self._channel)

    def call(self, op: Op[T], timeout: float | None) -> T:
        spec = op.grpc(self._wire)
        method = getattr(self._stub, spec.rpc)
        request = spec.stream() if spec.stream is not None else spec.request
        try:
            reply = method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise rpc.error(exc) from None
        return spec.parse(reply)

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcTransport:
    name = "grpc"

    def __init__(self, config: Config) -> None:
        self.address = config.endpoint.address
        self.wire = config.wire
        self._metadata = _grpc_metadata(config)
        self._channel = _grpc_channel(grpc.aio, config)
        self._stub = spb_grpc.SonovecStub(self._channel)

    async def call(self, op: Op[T], timeout: float | None) -> T:
        spec = op.grpc(self.wire)
        method = getattr(self._stub, spec.rpc)
        request = spec.stream() if spec.stream is not None else spec.request
        try:
            reply = await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise rpc.error(exc) from None
        return spec.parse(reply)

    async def embed_many(
        self, request: spb.EmbedManyRequest, timeout: float | None
    ) -> AsyncIterator[spb.EmbedManyResponse]:
        """EmbedMany's results as they arrive (a failed call raises ``SonovecClientError``)."""
        call = self._stub.EmbedMany(request, timeout=timeout, metadata=self._metadata)
        try:
            async for reply in call:
                yield reply
        except grpc.RpcError as exc:
            raise rpc.error(exc) from None

    async def close(self) -> None:
        await self._channel.close()
