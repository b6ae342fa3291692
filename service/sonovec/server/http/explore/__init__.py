"""The explorer page: ``/explore`` and ``/explore/{collection}``, static HTML + JS served by sonovec.

The page itself needs no key (it holds no data); every API call it makes goes to /v1 with the
key the user gives when /v1/models answers 401. plotly.js comes from the installed ``plotly``
package (its bundled ``plotly.min.js``): no CDN, works offline, nothing leaves the server.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Response

from sonovec.server.errors import not_found

router = APIRouter(tags=["explorer page"], include_in_schema=False)

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
_ASSETS = ("explore.js", "explore.css")


@cache
def plotly_js() -> bytes:
    """plotly.js as the ``plotly`` Python package ships it."""
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()


def _page() -> Response:
    return Response((STATIC / "index.html").read_bytes(), media_type=_TYPES[".html"],
                    headers={"Cache-Control": "no-cache"})


@router.get("/explore")
async def explore() -> Response:
    return _page()


@router.get("/explore/static/{asset}")
async def asset(asset: str) -> Response:
    if asset == "plotly.min.js":
        return Response(plotly_js(), media_type=_TYPES[".js"], headers={"Cache-Control": "max-age=86400"})
    if asset not in _ASSETS:
        raise not_found(f"no asset {asset!r}", field="asset", allowed=", ".join(("plotly.min.js", *_ASSETS)))
    return Response((STATIC / asset).read_bytes(), media_type=_TYPES[Path(asset).suffix])


@router.get("/explore/{collection}")
async def explore_collection(collection: str) -> Response:
    return _page()  # the page reads the collection from its path
