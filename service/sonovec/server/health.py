"""``sonovec health``: is the local server live or ready? For container HEALTHCHECKs and exec probes.

Also ``python -m sonovec.server.health``; ``sonovec probe`` is its old name, kept as an alias.
Standard library only, so it starts in milliseconds and needs none of the service's dependencies.
Exit status 0 when the endpoint answers 2xx within the timeout, 1 otherwise (refused, timed out,
503 while models load). Silent on success unless ``-v``; a failure prints one line to stderr,
which is what ``docker inspect`` shows in a container's health log.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_TIMEOUT_S = 3.0
READY_PATH = "/v1/health/ready"
LIVE_PATH = "/v1/health/live"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def default_url(live: bool, environ: Mapping[str, str] = os.environ) -> str:
    """The service's own readiness (or liveness) route on loopback, at ``SONOVEC_PORT`` (8000)."""
    port = environ.get("SONOVEC_PORT") or "8000"
    return f"http://127.0.0.1:{port}{LIVE_PATH if live else READY_PATH}"


def _headers(url: str, environ: Mapping[str, str]) -> dict[str, str]:
    # With SONOVEC_API_KEYS set every /v1 route may want a key; the probe shares the server's
    # environment, so it can present the first key, but only to a loopback address.
    keys = [k.strip() for k in environ.get("SONOVEC_API_KEYS", "").split(",") if k.strip()]
    host = urllib.parse.urlsplit(url).hostname or ""
    if keys and host in _LOOPBACK_HOSTS:
        return {"x-api-key": keys[0]}
    return {}


def check(
    url: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] = os.environ,
) -> tuple[bool, str]:
    """GET ``url``; (True, status line) on 2xx, else (False, why)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return False, f"not an http(s) url: {url}"
    request = urllib.request.Request(url, headers=_headers(url, environ), method="GET")
    # No proxies: an HTTP_PROXY inherited by the container must not capture a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        return False, f"{url}: HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return False, f"{url}: unreachable ({reason})"
    return 200 <= status < 300, f"{url}: HTTP {status}"


PROG = "sonovec health"
DESCRIPTION = (
    "Exit 0 when the local sonovec server is ready (or live, with --live), else 1 with the reason "
    "on stderr. Reads SONOVEC_PORT (default 8000) and sends the first of SONOVEC_API_KEYS to loopback."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sonovec health`` (shared by the ``sonovec`` CLI and ``python -m``)."""
    parser.add_argument("--live", action="store_true", help=f"check {LIVE_PATH} instead of {READY_PATH}")
    parser.add_argument("--url", help="check this URL instead (default: 127.0.0.1:$SONOVEC_PORT)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the result on success too")


def run(args: argparse.Namespace) -> int:
    url = args.url or default_url(args.live)
    ok, message = check(url, timeout=args.timeout)
    if not ok:
        print(f"{PROG}: not healthy: {message}", file=sys.stderr)
        return 1
    if args.verbose:
        print(f"{PROG}: ok: {message}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
