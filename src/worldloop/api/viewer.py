"""GET /: the live viewer, plain static files from ``worldloop/web`` (no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from .declare import Reply, operation

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

bp = Blueprint(
    "worldloop_viewer",
    __name__,
    static_folder=str(WEB_DIR),
    static_url_path="/viewer",
)


@bp.get("/")
@operation(
    "The live viewer (HTML; its static files are under /viewer/)",
    tags=("viewer",),
    responses={200: Reply("Page", media_type="text/html", schema={"type": "string"})},
)
def index() -> Response:
    resp = send_from_directory(WEB_DIR, "index.html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp
