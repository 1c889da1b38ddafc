"""The translation web page: GET / and its static assets (service/web/, plain HTML/CSS/JS, no build step).

Only the files listed in ASSETS are served. The page loads nothing from other origins, and its
Content-Security-Policy says so, so a browser refuses any script, style or request that is not this service's.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
HEADERS = {
    "Cache-Control": "no-cache",  # revalidate (ETag) so that an upgraded service never runs a stale app.js
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail="Not Found")
    return FileResponse(WEB_DIR / name, media_type=ASSETS[name], headers=HEADERS)
