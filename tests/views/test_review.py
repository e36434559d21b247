"""`designs review` (pipeline/views/review.py): the pages, verdicts into OUT/reviews, and the
attacks the desk refuses, through Starlette's TestClient on a small synthetic catalog."""

from __future__ import annotations

import html
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path

import pytest
from review_catalog import HOSTILE, build_review_catalog, design_id, write_curation

from flows.cli import EXIT_REFUSED, main
from pipeline.catalog.reviews import favourite_ids, latest_verdicts, read_reviews

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note on httpx
    from starlette.testclient import TestClient

from pipeline.views import review as review_module
from pipeline.views.review import MAX_BODY, create_app
from pipeline.views.review_pages import PAGE_SIZE, Reader

N = 60


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("review") / "out"
    return out, build_review_catalog(out, n=N)


@pytest.fixture
def desk(built, tmp_path) -> tuple[Path, list[str], TestClient]:
    """A copy of the catalog (verdicts and thumbnails are written) and a client of its desk."""
    source, order = built
    out = tmp_path / "out"
    shutil.copytree(source, out, symlinks=True)
    return out, order, TestClient(create_app(out, "ana", ["testserver"]))


def ids_of(text: str) -> list[str]:
    return re.findall(r'<a class="card" href="/design/[^"]*" data-design="([0-9a-f]+)"', text)


def token_of(text: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', text).group(1)


def post(client: TestClient, token: str | None, **fields: str):
    headers = {} if token is None else {"X-CSRF-Token": token}
    form = {"verdict_id": uuid.uuid4().hex, **fields}
    return client.post("/verdict", data=form, headers=headers)


def tables_snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file of the design and curation tables, with its size and mtime."""
    seen = {}
    for table in ("designs", "curation"):
        for root, _, files in os.walk(out / table):
            for name in files:
                st = os.stat(os.path.join(root, name))
                seen[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
    return seen


# --- pages ---


def test_first_pages_follow_the_curation_order_48_at_a_time(desk):
    out, order, client = desk
    first = client.get("/")
    assert first.status_code == 200
    assert ids_of(first.text) == order[:PAGE_SIZE]
    assert re.search(r'id="matches">60</b> designs match', first.text)
    assert 'id="next" rel="next" href="/?page=2"' in first.text
    second = client.get("/?page=2")
    assert ids_of(second.text) == order[PAGE_SIZE:]
    assert 'id="prev"' in second.text and 'id="next"' not in second.text
    assert ids_of(client.get("/?page=3").text) == []


def test_without_curation_pages_are_in_design_id_order(built, tmp_path):
    out = tmp_path / "plain"
    ids = build_review_catalog(out, n=50, curated=False)
    client = TestClient(create_app(out, "ana", ["testserver"]))
    text = client.get("/").text
    assert "not curated" in text and re.search(r'id="matches">51</b>', text)  # the failed design too
    every = sorted([*ids, design_id(10_000)])
    assert ids_of(text) == every[:PAGE_SIZE]
    assert ids_of(client.get("/?page=2").text) == every[PAGE_SIZE:]
    assert ids_of(client.get("/?status=ok&page=2").text) == ids[PAGE_SIZE:]


@pytest.mark.parametrize(
    "query, keep",
    [
        ("content=c1", lambda i: i % 3 == 1),
        ("style=s2", lambda i: i % 4 == 2),
        ("repeat=brick", lambda i: i % 2 == 1),
        ("content=c0&repeat=block", lambda i: i % 3 == 0 and i % 2 == 0),
        ("run=20261205T000000Z-review", lambda i: i % 7 != 6),  # the colourways are another run's
        ("status=ok", lambda i: True),
        ("status=failed", lambda i: False),
    ],
)
def test_filters_keep_the_curation_order_and_count_the_matches(desk, query, keep):
    out, order, client = desk
    index = {design_id(i): i for i in range(N)}
    expected = [d for d in order if keep(index[d])]
    text = client.get(f"/?{query}").text
    assert ids_of(text) == expected[:PAGE_SIZE]
    assert re.search(rf'id="matches">{len(expected)}</b>', text)


def test_group_and_verdict_filters(desk):
    out, order, client = desk
    group = client.get("/?group=g1").text
    assert ids_of(group) == [design_id(i) for i in (4, 5, 6, 7) if design_id(i) in order][:4]
    assert ids_of(group)[0] == design_id(4)  # the representative first
    token = token_of(group)
    assert post(client, token, design_id=order[3], verdict="favourite").status_code == 200
    assert post(client, token, design_id=order[5], verdict="reject").status_code == 200
    assert ids_of(client.get("/?verdict=favourite").text) == [order[3]]
    assert ids_of(client.get("/?verdict=reject").text) == [order[5]]
    unreviewed = client.get("/?verdict=unreviewed").text
    assert re.search(rf'id="matches">{N - 2}</b>', unreviewed) and order[3] not in ids_of(unreviewed)
    # The grid shows each verdict on its card.
    assert f'data-design="{order[3]}" data-verdict="favourite"' in client.get("/").text


@pytest.mark.parametrize(
    "query", ["page=0", "page=-1", "page=x", "status=lost", "verdict=love", "colour=red", "content=" + "x" * 300]
)
def test_bad_pages_and_filters_are_400(desk, query):
    assert desk[2].get(f"/?{query}").status_code == 400


def test_design_page(desk):
    out, order, client = desk
    # A colourway (every 7th design) and its parent, in one group of 4 (4..7: 6 is a colourway of 5).
    parent, colourway = design_id(5), design_id(6)
    index = order.index(parent)
    text = client.get(f"/design/{parent}?i={index}").text
    assert f'src="/image/{parent}?v=' in text and "<polyline" in text
    assert "<th>style_ratio</th>" in text and "<th>content_kept</th>" in text and "<th>steps</th>" in text
    assert "<th>group_id</th><td>g1</td>" in text and '<a id="group" href="/?group=g1">' in text
    members = re.search(r"<h3>members</h3>(.*?)</div>", text).group(1)
    assert [design_id(i) for i in (4, 5, 6, 7)] == re.findall(r'data-design="([0-9a-f]+)"', members)
    colourways = re.search(r"<h2>colourways</h2>(.*?)(</div>|<p)", text).group(1)
    assert re.findall(r'data-design="([0-9a-f]+)"', colourways) == [colourway]
    assert "nearest designs" in text and "no embeddings" in text
    assert f'href="/design/{order[index + 1]}?i={index + 1}&amp;o={index + 1}"' in text
    assert f'href="/design/{order[index - 1]}?i={index - 1}&amp;o={index - 1}"' in text
    # The grid's hint of where the design is in the curation is checked, not trusted.
    assert "<th>group_id</th><td>g1</td>" in client.get(f"/design/{parent}?o=0").text
    assert client.get(f"/design/{parent}?o=99999999").status_code == 200
    # A colourway's page names its parent; links to group members carry their place in the order.
    page = client.get(f"/design/{colourway}").text
    assert re.search(rf'<h3>parent</h3><div class="strip"><a class="card" href="/design/{parent}\?o={index}"', page)


def test_nearest_designs_from_the_embeddings(desk):
    import numpy as np

    from pipeline.catalog.embeddings import write_embeddings

    out, order, client = desk
    ids = [design_id(i) for i in range(10)]
    vectors = np.zeros((10, 4), np.float16)
    vectors[:, 0] = 1
    vectors[:, 1] = np.arange(10, dtype=np.float16) / 10  # each design nearest its neighbours in i
    write_embeddings(out, ids, vectors, "test-v1", "vgg16")
    text = client.get(f"/design/{design_id(0)}").text
    near = re.search(r"<h2>nearest designs</h2>(.*)</section>", text).group(1)
    assert "cosine over 10 embeddings" in near
    assert re.findall(r'data-design="([0-9a-f]+)"', near)[:3] == [design_id(1), design_id(2), design_id(3)]


def test_unknown_and_malformed_design_ids_are_404(desk):
    client = desk[2]
    assert client.get(f"/design/{'0' * 32}").status_code == 404
    for bad in ("..%2f..%2fetc", "x%00y", "a" * 200):
        assert client.get(f"/design/{bad}").status_code == 404
        assert client.get(f"/image/{bad}").status_code == 404


def test_catalog_strings_are_escaped_and_a_csp_is_sent(desk):
    out, order, client = desk
    hostile = design_id(3)  # style HOSTILE
    for page in (client.get("/"), client.get(f"/design/{hostile}"), client.get(f"/?style={HOSTILE}")):
        assert page.status_code == 200
        assert HOSTILE not in page.text and html.escape(HOSTILE) in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.text.count("<script") == 1 and '<script src="/static/review.js" defer></script>' in page.text
        assert not re.search(r"\sstyle=", page.text)  # no inline style: the CSP would refuse it
    assert ids_of(client.get(f"/?style={HOSTILE}").text)  # the filter matches the hostile value itself
    js = client.get("/static/review.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/..%2freview.py").status_code == 404
    assert client.get("/static/review.py").status_code == 404


# --- verdicts ---


def test_a_verdict_lands_in_reviews_and_a_retry_adds_nothing(desk):
    out, order, client = desk
    token = token_of(client.get("/").text)
    key = uuid.uuid4().hex
    first = client.post(
        "/verdict",
        data={"design_id": order[0], "verdict": "favourite", "verdict_id": key},
        headers={"X-CSRF-Token": token},
    )
    assert first.status_code == 200 and first.json()["added"] is True
    retry = client.post(
        "/verdict", data={"design_id": order[0], "verdict": "favourite", "verdict_id": key, "csrf_token": token}
    )
    assert retry.status_code == 200 and retry.json()["added"] is False
    rows = read_reviews(out).to_pylist()
    assert len(rows) == 1 and rows[0]["reviewer"] == "ana" and rows[0]["verdict"] == "favourite"
    assert favourite_ids(out, "ana") == [order[0]]
    assert post(client, token, design_id=order[0], verdict="clear").status_code == 200
    assert favourite_ids(out) == []
    assert {r["verdict"] for r in latest_verdicts(out).to_pylist()} == {"clear"}


def test_verdicts_survive_a_restart(desk):
    out, order, client = desk
    assert post(client, token_of(client.get("/").text), design_id=order[1], verdict="reject").status_code == 200
    again = TestClient(create_app(out, "ana", ["testserver"]))
    text = again.get("/").text
    assert f'data-design="{order[1]}" data-verdict="reject"' in text
    assert token_of(text) != token_of(client.get("/").text)  # a new process, a new token
    assert post(again, token_of(client.get("/").text), design_id=order[2], verdict="reject").status_code == 403


@pytest.mark.parametrize(
    "change, status",
    [
        ({"token": None}, 403),
        ({"token": "wrong"}, 403),
        ({"verdict": "love"}, 400),
        ({"verdict": ""}, 400),
        ({"design_id": "0" * 32}, 404),  # unknown
        ({"design_id": "../../etc/passwd"}, 400),
        ({"failed": True}, 404),  # a failed design has nothing to judge
        ({"verdict_id": "not-a-key"}, 400),
        ({"origin": "http://evil.example"}, 403),
        ({"content_type": "application/json"}, 415),
        ({"content_type": "multipart/form-data; boundary=x"}, 415),
        ({"oversized": True}, 413),
        ({"twice": True}, 400),
        ({"host": "evil.example"}, 400),
    ],
)
def test_bad_verdicts_are_4xx_and_change_nothing(desk, change, status):
    out, order, client = desk
    token = token_of(client.get("/").text)
    before = tables_snapshot(out)
    fields = {"design_id": order[0], "verdict": "favourite", "verdict_id": uuid.uuid4().hex}
    for key in ("verdict", "design_id", "verdict_id"):
        if key in change:
            fields[key] = change[key]
    if change.get("failed"):
        fields["design_id"] = design_id(10_000)
    headers = {"Content-Type": change.get("content_type", "application/x-www-form-urlencoded")}
    if change.get("token", token) is not None:
        headers["X-CSRF-Token"] = change.get("token", token)
    if "origin" in change:
        headers["Origin"] = change["origin"]
    if "host" in change:
        headers["Host"] = change["host"]
    from urllib.parse import urlencode

    body = urlencode(fields)
    if change.get("oversized"):
        body += "&pad=" + "x" * MAX_BODY
    if change.get("twice"):
        body += "&verdict=reject"
    response = client.post("/verdict", content=body.encode(), headers=headers)
    assert response.status_code == status, response.text
    assert read_reviews(out).num_rows == 0
    assert tables_snapshot(out) == before


def test_an_oversized_body_without_a_length_is_refused(desk):
    out, order, client = desk
    token = token_of(client.get("/").text)

    def chunks():
        yield b"design_id=" + order[0].encode() + b"&verdict=favourite&verdict_id=" + uuid.uuid4().hex.encode()
        yield b"&pad=" + b"x" * (MAX_BODY + 10)

    response = client.post(
        "/verdict",
        content=chunks(),
        headers={"X-CSRF-Token": token, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413 and read_reviews(out).num_rows == 0


def test_two_browsers_at_once_lose_no_verdict(desk):
    from concurrent.futures import ThreadPoolExecutor

    out, order, client = desk
    other = TestClient(create_app(out, "bo", ["testserver"]))
    pairs = [(client, token_of(client.get("/").text), "ana"), (other, token_of(other.get("/").text), "bo")]

    def give(k: int):
        c, token, _ = pairs[k % 2]
        return post(c, token, design_id=order[k], verdict="favourite").status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(give, range(12)))
    assert codes == [200] * 12
    assert read_reviews(out).num_rows == 12
    assert favourite_ids(out, "ana") == sorted(order[k] for k in range(0, 12, 2))
    assert favourite_ids(out, "bo") == sorted(order[k] for k in range(1, 12, 2))


# --- images ---


def test_images_carry_etags_and_cache_headers(desk):
    out, order, client = desk
    text = client.get("/").text
    src = re.search(rf'<img src="(/thumb/{order[0]}\?v=[0-9a-f]{{12}})"', text).group(1)
    image = client.get(src)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert "immutable" in image.headers["cache-control"]
    etag = image.headers["etag"]
    assert client.get(src, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(f"/image/{order[0]}").headers["cache-control"] == "private, no-cache"


def test_large_images_get_a_thumbnail_made_once(tmp_path, monkeypatch):
    out = tmp_path / "big"
    ids = build_review_catalog(out, n=3, image_size=400, curated=False)
    client = TestClient(create_app(out, "ana", ["testserver"]))
    first = client.get(f"/thumb/{ids[0]}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    (made,) = list((out / "thumbnails").rglob("*.jpg"))
    from PIL import Image

    with Image.open(made) as thumb:
        assert max(thumb.size) == review_module.THUMB_PX
    stamp = made.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(review_module, "write_atomic", lambda *a: calls.append(a))
    assert client.get(f"/thumb/{ids[0]}").content == first.content
    assert calls == [] and made.stat().st_mtime_ns == stamp
    assert client.get(f"/image/{ids[0]}").headers["content-type"] == "image/png"  # the design itself


def test_only_catalog_images_under_out_are_served(tmp_path):
    """A row whose output_uri leaves OUT, or an image that is a link out of it, serves nothing."""
    from pipeline.catalog.designs import DesignCatalog
    from pipeline.catalog.schema import SCHEMA

    out = tmp_path / "out"
    ids = build_review_catalog(out, n=3, curated=False)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    # A design's image replaced by a link to a file outside OUT.
    catalog = DesignCatalog(out)
    row = Reader(out).rows_by_id([ids[0]], columns=["output_uri"])[ids[0]]
    target = out / row["output_uri"]
    target.unlink()
    target.symlink_to(secret)
    # Rows whose paths leave OUT or name other files.
    bad = {
        "d1": "../secret.png",
        "d2": "/etc/passwd",
        "d3": "images/../../secret.png",
        "d4": "designs/_delta_log/00000000000000000000.json",
    }
    rows = [
        {
            "design_id": d,
            "run_id": "r",
            "created_at": row_time(),
            "status": "ok",
            "style_id": "s",
            "output_uri": uri,
            "output_sha256": "0" * 64,
        }
        for d, uri in bad.items()
    ]
    catalog.commit([{name: r.get(name) for name in SCHEMA.names} for r in rows], "r")
    client = TestClient(create_app(out, "ana", ["testserver"]))
    assert client.get(f"/image/{ids[0]}").status_code == 404
    assert client.get(f"/thumb/{ids[0]}").status_code == 404
    for d in bad:
        assert client.get(f"/image/{d}").status_code == 404
        assert client.get(f"/thumb/{d}").status_code == 404
    assert client.get(f"/image/{ids[1]}").status_code == 200


def row_time():
    from datetime import UTC, datetime

    return datetime(2026, 12, 5, tzinfo=UTC)


def test_the_app_never_writes_the_design_or_curation_tables(desk):
    out, order, client = desk
    before = tables_snapshot(out)
    token = token_of(client.get("/").text)
    client.get("/?page=2")
    client.get(f"/design/{order[0]}")
    client.get(f"/thumb/{order[0]}")
    assert post(client, token, design_id=order[0], verdict="favourite").status_code == 200
    assert tables_snapshot(out) == before


def test_a_new_curation_is_read_at_the_next_request(desk):
    out, order, client = desk
    assert ids_of(client.get("/").text)[0] == order[0]
    reordered = write_curation(out, list(reversed(order)), group_size=2)
    assert ids_of(client.get("/").text) == reordered[:PAGE_SIZE]


# --- the command ---


def test_review_command_refuses_before_serving(tmp_path, capsys):
    assert main(["review", str(tmp_path / "none")]) == EXIT_REFUSED
    assert "no design catalog" in capsys.readouterr().err
    out = tmp_path / "out"
    build_review_catalog(out, n=2, curated=False)
    assert main(["review", str(out), "--reviewer", "a b"]) == EXIT_REFUSED
    assert "reviewer 'a b' is invalid" in capsys.readouterr().err
    assert main(["review", str(out), "--port", "70000"]) == EXIT_REFUSED
    assert "--port 70000" in capsys.readouterr().err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["review", str(out), "--port", str(port)]) == EXIT_REFUSED
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_review_command_warns_off_loopback(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    build_review_catalog(out, n=2, curated=False)
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kw: served.update(host=host, port=port))
    assert main(["review", str(out), "--port", "8799"]) == 0
    assert served == {"host": "127.0.0.1", "port": 8799}
    assert "warning" not in capsys.readouterr().err
    assert main(["review", str(out), "--host", "0.0.0.0", "--port", "8799"]) == 0
    assert served["host"] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err


def free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "host, url_host",
    [("::1", "[::1]"), ("[::1]", "[::1]"), ("0:0:0:0:0:0:0:1", "[::1]"), ("127.0.0.2", "127.0.0.2")],
)
def test_a_loopback_desk_answers_the_host_its_url_names(tmp_path, capsys, monkeypatch, host, url_host):
    """`--host ::1` (or any loopback address): the printed URL is one a browser opens, the Host
    header it sends is accepted, a verdict from that origin lands; another Host is still refused."""
    out = tmp_path / "out"
    ids = build_review_catalog(out, n=2, curated=False)
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kw: served.update(app=app, host=host))
    port = free_port(host)

    assert main(["review", str(out), "--host", host, "--port", str(port)]) == 0

    printed = capsys.readouterr()
    assert f"http://{url_host}:{port}/ (Ctrl-C stops)" in printed.out and "warning" not in printed.err
    assert served["host"] == host.strip("[]")
    client = TestClient(served["app"], base_url=f"http://{url_host}:{port}")
    page = client.get("/")
    assert page.status_code == 200
    response = client.post(
        "/verdict",
        data={"verdict_id": uuid.uuid4().hex, "design_id": ids[0], "verdict": "favourite"},
        headers={"X-CSRF-Token": token_of(page.text), "Origin": f"http://{url_host}:{port}"},
    )
    assert response.status_code == 200 and favourite_ids(out) == [ids[0]]
    assert client.get("/", headers={"Host": f"evil.example:{port}"}).status_code == 400


def test_thumbnails_are_never_written_through_a_link_out_of_out(tmp_path):
    out = tmp_path / "big"
    ids = build_review_catalog(out, n=2, image_size=400, curated=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "thumbnails").symlink_to(elsewhere)
    client = TestClient(create_app(out, "ana", ["testserver"]))
    response = client.get(f"/thumb/{ids[0]}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"  # the design itself
    assert list(elsewhere.rglob("*")) == []


def test_verdicts_files_are_compacted_as_they_gather(desk):
    from deltalake import DeltaTable

    from pipeline.catalog.reviews import reviews_path

    out, order, client = desk
    client.app.state.desk.compact_files = 4
    token = token_of(client.get("/").text)
    for k in range(9):
        assert post(client, token, design_id=order[k], verdict="favourite").status_code == 200
    assert len(DeltaTable(str(reviews_path(out))).file_uris()) < 4
    assert favourite_ids(out, "ana") == sorted(order[:9])
    text = client.get("/").text
    assert all(f'data-design="{d}" data-verdict="favourite"' in text for d in order[:9])
