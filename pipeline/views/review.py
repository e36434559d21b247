"""`designs review OUT`: the review desk, a local web app over the design catalog.

Pages: `/` the designs 48 a page (`?page=N`) in curation order with filters in the query string
(content, style, run, repeat, status, verdict, group) and the count of matches; `/design/<id>`
a design's image, params, loss curve, quality measures, group, colourways and nearest designs.
Keys (static/review.js): arrows move, `f` favourite, `x` reject, `u` clear. Verdicts are POSTs
to `/verdict` appended to OUT/reviews (pipeline/catalog/reviews.py); nothing else is written but
thumbnails under OUT/thumbnails. What the pages read: pipeline/views/review_pages.py.

Safety: 127.0.0.1 unless --host says otherwise (the CLI warns); requests must name this
host (no DNS rebinding); only the image files catalog rows reference, under OUT/images, links
resolved (no traversal, no symlink escape); every catalog string escaped; a Content-Security-
Policy allowing only this app's own script and style; a POST needs the page's token (<meta
name="csrf-token">), a same-origin Origin where the browser sends one, a form body of at most
MAX_BODY bytes, a known design and a known verdict, else 4xx and nothing written.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import os
import re
import secrets
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.catalog.reviews import COMPACT_FILES, VERDICTS, Verdict, append_verdict, check_reviewer, compact_reviews
from pipeline.files import write_atomic
from pipeline.views.gallery import e, fmt, loss_curve_svg
from pipeline.views.review_defaults import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REVIEWER
from pipeline.views.review_pages import PAGE_SIZE, BadRequest, Reader, check_filters

MAX_BODY = 2048  # a verdict's form is about 150 bytes
MAX_PAGE = 1_000_000  # 48M designs
THUMB_PX = 384  # grid thumbnails: the long side
THUMBS_DIR = "thumbnails"
# Images at most this many bytes are served as they are in the grid (no thumbnail made).
THUMB_MIN_BYTES = 96 * 1024
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_IMAGE_URI = re.compile(r"images/[A-Za-z0-9]{1,8}/[A-Za-z0-9]{1,128}-[0-9a-f]{12}\.(png|tif)")
_DESIGN_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """--host as a URL and a Host header carry it: an IPv6 address in brackets (given with or
    without), in the short form browsers write; anything else as given."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return host
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def loopback_hosts(host: str) -> list[str]:
    """The Host names a loopback desk accepts: the usual loopback names and its own address
    (127.0.0.2 is loopback too; a browser sends what the URL says)."""
    return list(dict.fromkeys((*_LOOPBACK_NAMES, url_host(host).lower())))


class SecurityHeaders:
    """Every response: the CSP, no sniffing, no referrer, no framing."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Desk:
    """The app's state: the reader, the reviewer, this process's session and token."""

    def __init__(self, out: str | Path, reviewer: str):
        self.out = Path(out)
        self.reader = Reader(self.out)
        self.reviewer = check_reviewer(reviewer)
        self.session = uuid.uuid4().hex
        self.token = secrets.token_urlsafe(32)
        self.compact_files = COMPACT_FILES

    # --- images ---

    def image_path(self, row: dict[str, Any] | None) -> Path | None:
        """The design's image file: a catalog-shaped relative path under OUT/images whose real
        path (links resolved) stays inside OUT/images; None otherwise."""
        if not row or row.get("status") != "ok":
            return None
        uri = row.get("output_uri") or ""
        if not _IMAGE_URI.fullmatch(uri):
            return None
        root = os.path.realpath(self.out / "images")
        real = os.path.realpath(self.out / PurePosixPath(uri))
        if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
            return None
        return Path(real)

    def thumbnail(self, row: dict[str, Any], path: Path) -> Path | None:
        """The grid's thumbnail of a large image, made once under OUT/thumbnails; None: serve the image."""
        if path.suffix == ".png" and path.stat().st_size <= THUMB_MIN_BYTES:
            return None
        sha = str(row.get("output_sha256") or "")[:12]
        design_id = row["design_id"]
        thumbs = self.out / THUMBS_DIR
        target = thumbs / design_id[:2] / f"{design_id}-{sha}-{THUMB_PX}.jpg"
        root = os.path.realpath(self.out)
        if os.path.commonpath([root, os.path.realpath(target.parent if target.parent.exists() else thumbs)]) != root:
            return None  # a link out of OUT: make nothing there
        if target.is_file() and not target.is_symlink():
            return target
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.thumbnail((THUMB_PX, THUMB_PX))
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, "JPEG", quality=85)
        except (OSError, ValueError):  # a file Pillow cannot read (a 16-bit TIFF): no thumbnail
            return None
        write_atomic(target, buffer.getvalue())
        return target


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise BadRequest(f"page {text[:20]!r} must be a whole number from 1 to {MAX_PAGE}")
    return int(text)


def _filters(request: Request) -> dict[str, str]:
    filters = {k: v for k, v in request.query_params.items() if k not in ("page", "i", "o") and v != ""}
    check_filters(filters)
    return filters


def _query(filters: dict[str, str], **extra: Any) -> str:
    values = {**filters, **{k: v for k, v in extra.items() if v is not None}}
    return ("?" + urlencode(values)) if values else ""


def _head(desk: Desk, title: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{e(desk.token)}">'
        f"<title>{e(title)}</title>"
        '<link rel="stylesheet" href="/static/review.css">'
        '<script src="/static/review.js" defer></script></head>'
    )


def _thumb_src(row: dict[str, Any], kind: str = "thumb") -> str:
    sha = str(row.get("output_sha256") or "")[:12]
    return f"/{kind}/{e(row['design_id'])}" + (f"?v={e(sha)}" if sha else "")


def _ack() -> str:
    return '<p id="ack" role="status" aria-live="polite"></p>'


def _figure(row: dict[str, Any], href: str, caption: str, index: int | None = None) -> str:
    design_id = row["design_id"]
    verdict = row.get("verdict") or ""
    if row.get("status") == "ok" and row.get("output_uri"):
        size = ""
        if isinstance(row.get("width"), int) and isinstance(row.get("height"), int):
            size = f' width="{row["width"]}" height="{row["height"]}"'
        picture = f'<img src="{_thumb_src(row)}" alt="{e(caption)}"{size} loading="lazy">'
    else:
        picture = f'<div class="noimage">{e(row.get("status") or "no image")}</div>'
    at = f' data-index="{index}"' if index is not None else ""
    return (
        f'<a class="card" href="{e(href)}" data-design="{e(design_id)}" data-verdict="{e(verdict)}"{at}>'
        f'{picture}<span class="caption">{e(caption)}</span><span class="badge" aria-hidden="true"></span></a>'
    )


def render_grid(desk: Desk, page_number: int, filters: dict[str, str]) -> str:
    page = desk.reader.page(page_number, filters, desk.reviewer)
    pages = max(1, -(-page.matches // PAGE_SIZE))
    cards = []
    for k, row in enumerate(page.rows):
        index = page.start + k
        caption = f"{row.get('content_id') or 'pattern'} × {row.get('style_id') or ''}"
        at = _query(filters, i=index, o=row.get("review_order") if page.curated else None)
        cards.append(_figure(row, f"/design/{row['design_id']}{at}", caption, index))
    prev_link = (
        f'<a id="prev" rel="prev" href="/{e(_query(filters, page=page_number - 1))}">← previous</a>'
        if page_number > 1
        else '<span class="off">← previous</span>'
    )
    next_link = (
        f'<a id="next" rel="next" href="/{e(_query(filters, page=page_number + 1))}">next →</a>'
        if page_number < pages
        else '<span class="off">next →</span>'
    )
    order = "curation order (representatives first, by score)" if page.curated else "design_id order (not curated)"
    fields = "".join(
        f'<label>{name}<input name="{name}" value="{e(filters.get(name, ""))}" size="12"></label>'
        for name in ("content", "style", "run", "repeat", "group")
    )

    def select(name: str, values: tuple[str, ...]) -> str:
        options = "".join(
            f'<option value="{v}"{" selected" if filters.get(name) == v else ""}>{v or "any"}</option>' for v in values
        )
        return f'<label>{name}<select name="{name}">{options}</select></label>'

    shown = f"{page.start + 1:,}–{page.start + len(page.rows):,}" if page.rows else "none"
    return (
        _head(desk, f"Review: {desk.out.name or desk.out}")
        + '<body class="grid-page"><header>'
        + f"<h1>Review <code>{e(desk.out)}</code> <small>as {e(desk.reviewer)}</small></h1>"
        + f'<p class="meta"><b id="matches">{page.matches:,}</b> designs match; showing {shown}, page '
        f"{page_number:,} of {pages:,}; {order}</p>"
        + '<form method="get" action="/" role="search">'
        + fields
        + select("status", ("", "ok", "failed"))
        + select("verdict", ("", "favourite", "reject", "unreviewed"))
        + '<button type="submit">filter</button> <a href="/">clear</a></form>'
        + f'<nav class="pager">{prev_link} {next_link}</nav>'
        + '<p class="keys">keys: arrows move · Enter opens · f favourite · x reject · u clear · n / p next / previous page</p>'
        + _ack()
        + "</header>"
        + f'<main class="grid" id="designs">{"".join(cards)}</main></body></html>\n'
    )


def _table(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{e(k)}</th><td>{e(fmt(v))}</td></tr>" for k, v in pairs)


def render_design(
    desk: Desk, design_id: str, index: int | None, filters: dict[str, str], review_order: int | None = None
) -> str | None:
    reader = desk.reader
    found = reader.rows_by_id([design_id], columns=None).get(design_id)  # every column
    if found is None:
        return None
    row = dict(found)
    row["verdict"] = reader.verdicts(desk.reviewer).get(design_id) or ""
    curation, members = reader.curation_of(design_id, review_order)
    colourways = reader.colourways_of(row)
    nearest, nearest_note = reader.nearest(design_id)
    related_ids = [m["design_id"] for m in members] + colourways + [d for d, _ in nearest]
    if row.get("parent_design_id"):
        related_ids.append(row["parent_design_id"])
    related = reader.cards(related_ids)

    orders = {m["design_id"]: m["review_order"] for m in members if m.get("review_order") is not None}

    def strip(ids: list[str], labels: dict[str, str]) -> str:
        figures = []
        for other in ids:
            card = related.get(other) or {"design_id": other, "status": "missing"}
            where = f"?o={orders[other]}" if other in orders else ""  # a member's place: no scan for it
            figures.append(_figure(card, f"/design/{other}{where}", labels.get(other, other[:12])))
        return f'<div class="strip">{"".join(figures)}</div>' if figures else '<p class="none">none</p>'

    params = row.get("params") or {}
    quality = row.get("quality") or {}
    final = row.get("final_loss") or {}
    title = f"{row.get('content_id') or 'pattern'} × {row.get('style_id') or ''}"
    nav = []
    if index is not None:
        if index > 0:
            nav.append(
                f'<a id="prev" rel="prev" href="/design/{e(_prev_next(desk, index - 1, filters))}">← previous</a>'
            )
        following = _prev_next(desk, index + 1, filters)
        if following:
            nav.append(f'<a id="next" rel="next" href="/design/{e(following)}">next →</a>')
        back = _query(filters, page=index // PAGE_SIZE + 1)
    else:
        back = _query(filters)
    nav.insert(0, f'<a id="grid" href="/{e(back)}">grid</a>')
    if row.get("status") == "ok" and row.get("output_uri"):
        picture = f'<a href="{_thumb_src(row, "image")}"><img class="large" src="{_thumb_src(row, "image")}" alt="{e(title)}"></a>'
    else:
        picture = f'<div class="noimage">{e(row.get("status"))}: {e(row.get("error"))}</div>'
    group = ""
    if curation is not None:
        group = _table(
            [
                ("group_id", curation.get("group_id")),
                ("group_size", curation.get("group_size")),
                ("rank_in_group", curation.get("rank_in_group")),
                ("score", curation.get("score")),
                ("representative", curation.get("representative")),
                ("review_order", curation.get("review_order")),
                ("method", curation.get("method")),
            ]
        ) + (
            f'<tr><th></th><td><a id="group" href="/{e(_query({"group": str(curation.get("group_id"))}))}">'
            f"the group in the grid</a></td></tr>"
        )
    labels = {m["design_id"]: f"#{m['rank_in_group']} · {fmt(m['score'])}" for m in members}
    near_labels = {d: f"cos {s:.3f}" for d, s in nearest}
    parent = ""
    if row.get("parent_design_id"):
        parent = "<h3>parent</h3>" + strip([row["parent_design_id"]], {})
    palette = ", ".join(str(c) for c in (row.get("palette") or []))
    quality_rows = [
        ("style_ratio", quality.get("style_ratio")),
        ("style_ratio_per_layer", quality.get("style_ratio_per_layer")),
        ("content_kept", quality.get("content_kept")),
        ("seam_score", row.get("seam_score")),
        ("mask_leakage", row.get("mask_leakage")),
    ] + [(f"final_loss.{k}", v) for k, v in final.items()]
    details = [
        ("design_id", row.get("design_id")),
        ("status", row.get("status")),
        ("run_id", row.get("run_id")),
        ("created_at", row.get("created_at")),
        ("content_id", row.get("content_id")),
        ("style_id", row.get("style_id")),
        ("collection", row.get("collection")),
        ("tags", row.get("tags")),
        ("output_uri", row.get("output_uri")),
        ("output_sha256", row.get("output_sha256")),
        ("size (px)", f"{row.get('width')} x {row.get('height')}"),
        ("palette", palette or None),
        ("notes", row.get("notes")),
        ("error", row.get("error")),
    ]
    return (
        _head(desk, f"{title}: review")
        + f'<body class="design-page"><header><nav class="pager">{" ".join(nav)}</nav>'
        + f"<h1>{e(title)}</h1>"
        + '<p class="verdicts">'
        + "".join(f'<button type="button" data-verdict="{v}">{v}</button>' for v in VERDICTS)
        + f' <span class="current">verdict: <b id="verdict">{e(row["verdict"] or "none")}</b></span></p>'
        + _ack()
        + "</header>"
        + f'<main class="design" data-design="{e(design_id)}" data-verdict="{e(row["verdict"])}">'
        + f'<section class="picture">{picture}</section>'
        + '<section class="facts">'
        + f"<h2>loss</h2>{loss_curve_svg(row.get('loss_total'), params.get('steps'))}"
        + f'<h2>quality</h2><table class="kv">{_table(quality_rows)}</table>'
        + f'<h2>design</h2><table class="kv">{_table(details)}</table>'
        + f'<details><summary>params ({len(params)})</summary><table class="kv">{_table(sorted(params.items()))}</table></details>'
        + "</section>"
        + '<section class="related">'
        + (
            f'<h2>group</h2><table class="kv">{group}</table><h3>members</h3>{strip([m["design_id"] for m in members], labels)}'
            if curation is not None
            else '<h2>group</h2><p class="none">not curated yet (`designs curate OUT`)</p>'
        )
        + parent
        + f"<h2>colourways</h2>{strip(colourways, {})}"
        + f'<h2>nearest designs</h2><p class="note">{e(nearest_note)}</p>{strip([d for d, _ in nearest], near_labels)}'
        + "</section></main></body></html>\n"
    )


def _prev_next(desk: Desk, index: int, filters: dict[str, str]) -> str | None:
    other = desk.reader.at(index, filters, desk.reviewer)
    if other is None:
        return None
    order = other[1] if desk.reader.curation() is not None else None
    return f"{other[0]}{_query(filters, i=index, o=order)}"


def _number(text: str | None) -> int | None:
    """A position from the query string; None where absent or not a small whole number."""
    return int(text) if text is not None and text.isdigit() and len(text) <= 10 else None


def _bad(err: Exception, status: int = 400) -> PlainTextResponse:
    return PlainTextResponse(f"{err}\n", status_code=status)


def create_app(out: str | Path, reviewer: str = DEFAULT_REVIEWER, allowed_hosts: list[str] | None = None) -> Starlette:
    """The review desk's app over OUT. `allowed_hosts`: the Host names requests may carry (the
    loopback names by default; ["*"] when serving another interface)."""
    desk = Desk(out, reviewer)
    desk.reader.designs()  # no catalog: FileNotFoundError now, not at the first request

    async def grid(request: Request) -> Response:
        try:
            page_number, filters = _page_number(request), _filters(request)
            return HTMLResponse(await run_in_threadpool(render_grid, desk, page_number, filters))
        except BadRequest as err:
            return _bad(err)

    async def design(request: Request) -> Response:
        design_id = request.path_params["design_id"]
        if not _DESIGN_ID.fullmatch(design_id):
            return _bad(ValueError(f"design id {design_id[:40]!r} must be ASCII letters and digits"), 404)
        try:
            filters = _filters(request)
            index, order = (_number(request.query_params.get(name)) for name in ("i", "o"))
            body = await run_in_threadpool(render_design, desk, design_id, index, filters, order)
        except BadRequest as err:
            return _bad(err)
        if body is None:
            return _bad(ValueError(f"no design {design_id} in the catalog"), 404)
        return HTMLResponse(body)

    async def image(request: Request) -> Response:
        design_id = request.path_params["design_id"]
        if not _DESIGN_ID.fullmatch(design_id):
            return _bad(ValueError("bad design id"), 404)
        row = await run_in_threadpool(desk.reader.card, design_id)
        path = await run_in_threadpool(desk.image_path, row)
        if row is None or path is None:
            return _bad(ValueError(f"no image for design {design_id}"), 404)
        sha = str(row.get("output_sha256") or "")
        served, tag = path, sha
        if request.url.path.startswith("/thumb/") or path.suffix == ".tif":
            thumb = await run_in_threadpool(desk.thumbnail, row, path)
            if thumb is not None:
                served, tag = thumb, f"{sha}-t{THUMB_PX}"
            elif path.suffix == ".tif":
                return _bad(ValueError(f"design {design_id}'s TIFF has no preview"), 404)
        etag = f'"{tag}"'
        if tag and request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        # The URL carries the file's hash (?v=): the browser may keep it as long as it likes.
        versioned = request.query_params.get("v") == sha[:12] and bool(sha)
        cache = "private, max-age=31536000, immutable" if versioned else "private, no-cache"
        media = "image/jpeg" if served.suffix == ".jpg" else "image/png"
        return FileResponse(served, media_type=media, headers={"ETag": etag, "Cache-Control": cache})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return _bad(ValueError("not found"), 404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    async def verdict(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return _bad(ValueError("cross-origin verdict refused"), 403)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return _bad(ValueError(f"body over {MAX_BODY} bytes"), 413)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return _bad(ValueError("a verdict is a form (application/x-www-form-urlencoded)"), 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _bad(ValueError(f"body over {MAX_BODY} bytes"), 413)
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return _bad(ValueError("the form cannot be read"), 400)
        if any(len(values) != 1 for values in form.values()):
            return _bad(ValueError("each field once"), 400)
        fields = {k: v[0] for k, v in form.items()}
        token = request.headers.get("x-csrf-token") or fields.get("csrf_token") or ""
        if not hmac.compare_digest(token.encode(), desk.token.encode()):
            return _bad(ValueError("missing or wrong token: reload the page"), 403)
        design_id, kind = fields.get("design_id", ""), fields.get("verdict", "")
        if kind not in VERDICTS:
            return _bad(ValueError(f"verdict {kind[:40]!r} is invalid; accepted: {', '.join(VERDICTS)}"), 400)
        if not _DESIGN_ID.fullmatch(design_id):
            return _bad(ValueError(f"design_id {design_id[:40]!r} must be ASCII letters and digits"), 400)
        record = Verdict(fields.get("verdict_id", ""), design_id, kind, desk.reviewer, desk.session)
        try:
            record.check()
        except ValueError as err:
            return _bad(err, 400)
        row = await run_in_threadpool(desk.reader.card, design_id)
        if row is None or row.get("status") != "ok":
            return _bad(ValueError(f"no ok design {design_id} in the catalog"), 404)
        added = await run_in_threadpool(append_verdict, desk.out, record)
        # One small file a verdict: rewritten into one as they gather, so reading them stays quick.
        await run_in_threadpool(compact_reviews, desk.out, desk.compact_files)
        return JSONResponse({"design_id": design_id, "verdict": kind, "added": added, "reviewer": desk.reviewer})

    hosts = allowed_hosts if allowed_hosts is not None else list(_LOOPBACK_NAMES)
    app = Starlette(
        routes=[
            Route("/", grid),
            Route("/design/{design_id}", design),
            Route("/image/{design_id}", image),
            Route("/thumb/{design_id}", image),
            Route("/static/{name}", static),
            Route("/verdict", verdict, methods=["POST"]),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
    )
    app.state.desk = desk
    return app


def serve(
    out: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, reviewer: str = DEFAULT_REVIEWER
) -> None:
    """Serve the desk until Ctrl-C. FileNotFoundError (no catalog), ValueError (a bad reviewer,
    port or a port in use) before anything is served."""
    import socket

    import uvicorn

    if not 0 < port < 65536:
        raise ValueError(f"--port {port} must be from 1 to 65535")
    loopback = is_loopback(host)
    app = create_app(out, reviewer, loopback_hosts(host) if loopback else ["*"])
    shown = url_host(host)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), port))
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}; give another --port") from None
    removed = compact_reviews(out)
    if removed:
        print(f"reviews: {removed} small files compacted")
    print(f"review desk for {out} as {reviewer}: http://{shown}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning", server_header=False)
