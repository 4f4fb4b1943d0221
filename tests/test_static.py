"""Static files served by the core (issue 18): --static-map and its settings, HTTP behaviour
(types, validators, 304, ranges, precompressed siblings, index pages, 405), path safety (every
escape attempt sent as exact bytes), files changing under the server, a sparse 1 GB file,
access log and metrics, and the Python API."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

from support import (
    APPS_DIR,
    Response,
    Server,
    clean_env,
    ferrocorn_bin,
    free_port,
    http_request,
    running_server,
    wait_for,
)
from support.raw import assert_standard_headers

APP = "basic:app"  # answers "hello": whatever reaches the app says so
SECRET = b"TOP SECRET: outside the static directory"
CSS = (b"body { color: #333; }\n" * 94)[:2048]
JS = bytes(range(256)) * 64  # 16 KiB: kept in memory by the server
BIG = 1 << 30


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/secret.txt beside tmp/static/ with every kind of file the tests ask for."""
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "page.txt").write_bytes(SECRET)
    root = base / "static"
    root.mkdir()
    (root / "site.css").write_bytes(CSS)
    (root / "app.js").write_bytes(JS)
    (root / "app.js.gz").write_bytes(gzip.compress(JS))
    (root / "app.js.br").write_bytes(b"BROTLI" + JS[:100])
    (root / "app.js.zst").write_bytes(b"ZSTD" + JS[:50])
    (root / "main.0123456789ab.css").write_bytes(CSS)
    (root / "index-DeAdBeEf.js").write_bytes(b"vite();")
    (root / "data.json").write_bytes(b'{"a": 1}')
    (root / "logo.svg").write_bytes(b"<svg/>")
    (root / "empty.txt").write_bytes(b"")
    (root / "with space.txt").write_bytes(b"spaced")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "nodex").mkdir()
    (root / "nodex" / "a.txt").write_bytes(b"a")
    (root / ".env").write_bytes(SECRET)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET)
    (root / "link-out.txt").symlink_to(base / "secret.txt")
    (root / "dir-out").symlink_to(base / "outside")
    (root / "link-in.css").symlink_to(root / "site.css")
    os.mkfifo(root / "fifo.css")
    big = root / "big.bin"
    with open(big, "wb") as f:
        f.truncate(BIG)  # sparse: no disk time
        for off in (0, BIG // 2, BIG - 16):
            f.seek(off)
            f.write(marker(off))
    return root


def marker(off: int) -> bytes:
    return f"@{off:015d}".encode()


@pytest.fixture(scope="module")
def server(tree: Path) -> Iterator[Server]:
    with running_server(APP, "--static-map", f"/static={tree}", "--static-index",
                        "--threads", "2") as srv:
        yield srv


def raw(server: Server, path: str, method: str = "GET",
        headers: list[tuple[str, str]] | None = None, version: str = "HTTP/1.1") -> Response:
    """One request sent as exactly these bytes."""
    with server.connect() as conn:
        conn.send(http_request(path, method, headers=headers, version=version))
        return conn.response(method)


# ------------------------------------------------------------------------------ basics


def test_get_sends_the_file_with_its_headers(server: Server, tree: Path) -> None:
    r = server.get("/static/site.css")
    assert r.status == 200
    assert r.body == CSS
    assert r.header("Content-Type") == "text/css; charset=utf-8"
    assert r.header("Content-Length") == str(len(CSS))
    assert r.header("Cache-Control") == "max-age=60, public"
    assert r.header("Accept-Ranges") == "bytes"
    assert r.header("Vary") is None, "no precompressed sibling: nothing varies"
    etag = r.header("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"')
    modified = parsedate_to_datetime(r.header("Last-Modified") or "")
    assert int(modified.timestamp()) == int((tree / "site.css").stat().st_mtime)
    assert_standard_headers(r)
    # The query string does not matter (cache busting), nor a symlink inside the directory.
    assert server.get("/static/site.css?v=3").body == CSS
    assert server.get("/static/link-in.css").body == CSS
    assert server.get("/static/with%20space.txt").body == b"spaced"


@pytest.mark.parametrize(("name", "ctype"), [
    ("app.js", "javascript; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("logo.svg", "image/svg+xml; charset=utf-8"),
    ("big.bin", "application/octet-stream"),
])
def test_content_types(server: Server, name: str, ctype: str) -> None:
    r = raw(server, f"/static/{name}", "HEAD")
    assert r.status == 200
    assert (r.header("Content-Type") or "").endswith(ctype), r.headers


def test_head_has_the_get_headers_and_no_body(server: Server) -> None:
    get = raw(server, "/static/site.css")
    with server.connect() as conn:
        conn.send(http_request("/static/site.css", "HEAD") + http_request("/static/app.js"))
        head = conn.response("HEAD")
        after = conn.response()
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(CSS))
    for name in ("Content-Type", "ETag", "Last-Modified", "Cache-Control"):
        assert head.header(name) == get.header(name), name
    assert after.body == JS, "the next response on the connection is intact"


def test_http_1_0(server: Server) -> None:
    r = raw(server, "/static/site.css", version="HTTP/1.0")
    assert r.status == 200 and r.body == CSS


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow(server: Server, method: str) -> None:
    with server.connect() as conn:
        conn.send(http_request("/static/site.css", method, body=b"x" * 100)
                  + http_request("/static/site.css"))
        r = conn.response(method)
        assert r.status == 405
        assert r.header("Allow") == "GET, HEAD"
        again = conn.response()
        assert again.status == 200 and again.body == CSS, "the body was read; keep-alive"


def test_misses_are_404_and_other_paths_go_to_the_app(server: Server) -> None:
    r = server.get("/static/nope.css")
    assert r.status == 404 and b"no such static file" in r.body
    assert server.get("/static/nodex/").status == 404, "a directory without index.html"
    assert server.get("/static/site.css/").status == 404
    assert raw(server, "/static/nope.css", "POST").status == 404
    assert server.get("/staticfile").body == b"hello"
    assert server.get("/").body == b"hello"


def test_fifo_and_empty_file(server: Server) -> None:
    start = time.monotonic()
    assert server.get("/static/fifo.css").status == 404
    assert time.monotonic() - start < 5, "opening a FIFO must not wait for a writer"
    r = server.get("/static/empty.txt")
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "0"


# ------------------------------------------------------------------------ conditionals


def test_if_none_match_and_if_modified_since(server: Server) -> None:
    r = server.get("/static/site.css")
    etag, modified = r.header("ETag") or "", r.header("Last-Modified") or ""
    for headers in ([("If-None-Match", etag)],
                    [("If-None-Match", f"W/{etag}")],
                    [("If-None-Match", f'"nope", {etag}')],
                    [("If-None-Match", "*")],
                    [("If-Modified-Since", modified)],
                    [("If-Modified-Since", formatdate(time.time() + 60, usegmt=True))]):
        nm = raw(server, "/static/site.css", headers=headers)
        assert nm.status == 304, headers
        assert nm.body == b""
        assert nm.header("ETag") == etag
        assert nm.header("Cache-Control") == "max-age=60, public"
    older = formatdate(parsedate_to_datetime(modified).timestamp() - 10, usegmt=True)
    for headers in ([("If-None-Match", '"other"')],
                    [("If-Modified-Since", older)],
                    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
                    [("If-None-Match", '"other"'), ("If-Modified-Since", modified)],
                    [("If-Modified-Since", "not a date")]):
        assert raw(server, "/static/site.css", headers=headers).status == 200, headers


# ------------------------------------------------------------------------------ ranges


def test_single_ranges(server: Server) -> None:
    n = len(JS)
    for spec, start, end in [("0-9", 0, 9), ("100-", 100, n - 1), ("-10", n - 10, n - 1),
                             ("5-99999", 5, n - 1)]:
        r = raw(server, "/static/app.js", headers=[("Range", f"bytes={spec}")])
        assert r.status == 206, spec
        assert r.header("Content-Range") == f"bytes {start}-{end}/{n}"
        assert r.body == JS[start:end + 1]
        assert r.header("Content-Length") == str(end - start + 1)
    r = raw(server, "/static/app.js", headers=[("Range", f"bytes={n}-")])
    assert r.status == 416 and r.header("Content-Range") == f"bytes */{n}"
    assert raw(server, "/static/empty.txt", headers=[("Range", "bytes=0-")]).status == 416
    # Several ranges are answered with the whole file (documented); so are malformed ones.
    for spec in ("bytes=0-1,5-6", "bytes=9-1", "lines=1-2", "bytes=x-y"):
        r = raw(server, "/static/app.js", headers=[("Range", spec)])
        assert r.status == 200 and r.body == JS, spec
    # HEAD ignores Range (RFC 9110 §14.2).
    assert raw(server, "/static/app.js", "HEAD", headers=[("Range", "bytes=0-1")]).status == 200


def test_if_range(server: Server) -> None:
    r = server.get("/static/site.css")
    etag, modified = r.header("ETag") or "", r.header("Last-Modified") or ""
    rng = ("Range", "bytes=0-3")
    assert raw(server, "/static/site.css", headers=[rng, ("If-Range", etag)]).status == 206
    assert raw(server, "/static/site.css", headers=[rng, ("If-Range", modified)]).status == 206
    for stale in ('"old"', f"W/{etag}", "Thu, 01 Jan 2015 00:00:00 GMT"):
        r = raw(server, "/static/site.css", headers=[rng, ("If-Range", stale)])
        assert r.status == 200 and r.body == CSS, stale


def test_a_sparse_1gb_file_with_ranges_and_whole(server: Server, tree: Path) -> None:
    r = raw(server, "/static/big.bin", "HEAD")
    assert r.header("Content-Length") == str(BIG)
    for off in (0, BIG // 2, BIG - 16):
        r = raw(server, "/static/big.bin", headers=[("Range", f"bytes={off}-{off + 15}")])
        assert r.status == 206 and r.body == marker(off)
        assert r.header("Content-Range") == f"bytes {off}-{off + 15}/{BIG}"
    r = raw(server, "/static/big.bin", headers=[("Range", "bytes=-16")])
    assert r.body == marker(BIG - 16)
    r = raw(server, "/static/big.bin", headers=[("Range", f"bytes={BIG // 2 - 4}-{BIG // 2 + 3}")])
    assert r.body == b"\0" * 4 + marker(BIG // 2)[:4]
    # The whole gigabyte, byte for byte (curl into cmp), in bounded time.
    start = time.monotonic()
    curl = subprocess.Popen(["curl", "-sS", "--max-time", "120", f"{server.url}/static/big.bin"],
                            stdout=subprocess.PIPE)
    cmp = subprocess.run(["cmp", "-", str(tree / "big.bin")], stdin=curl.stdout,
                         capture_output=True, timeout=150)
    assert curl.stdout is not None
    curl.stdout.close()
    assert curl.wait(timeout=30) == 0
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert time.monotonic() - start < 120


# ---------------------------------------------------------------- precompressed siblings


@pytest.mark.parametrize(("accept", "suffix", "coding"), [
    ("gzip, deflate, br", ".br", "br"),
    ("gzip, deflate, br, zstd", ".br", "br"),
    ("zstd, gzip;q=0.5", ".zst", "zstd"),
    ("gzip", ".gz", "gzip"),
    ("gzip, br;q=0", ".gz", "gzip"),
    ("br;q=0.2, gzip;q=0.8", ".gz", "gzip"),
    ("identity", "", None),
    ("", "", None),
    ("deflate", "", None),
])
def test_precompressed_sibling_by_q_value(server: Server, tree: Path, accept: str, suffix: str,
                                          coding: str | None) -> None:
    headers = [("Accept-Encoding", accept)] if accept else []
    r = raw(server, "/static/app.js", headers=headers)
    assert r.status == 200
    assert r.body == (tree / f"app.js{suffix}").read_bytes()
    assert r.header("Content-Encoding") == coding
    assert r.header("Vary") == "Accept-Encoding"
    assert (r.header("Content-Type") or "").endswith("javascript; charset=utf-8")


def test_each_encoding_has_its_own_validators(server: Server) -> None:
    tags = {raw(server, "/static/app.js", headers=[("Accept-Encoding", ae)]).header("ETag")
            for ae in ("br", "gzip", "zstd", "identity")}
    assert len(tags) == 4
    gz = raw(server, "/static/app.js", headers=[("Accept-Encoding", "gzip")])
    nm = raw(server, "/static/app.js",
             headers=[("Accept-Encoding", "gzip"), ("If-None-Match", gz.header("ETag") or "")])
    assert nm.status == 304 and nm.header("Vary") == "Accept-Encoding"
    part = raw(server, "/static/app.js", headers=[("Accept-Encoding", "gzip"),
                                                  ("Range", "bytes=0-1")])
    assert part.status == 206 and part.body == b"\x1f\x8b", "ranges are of the gzip file"


def test_curl_decompresses_the_gzip_sibling(server: Server) -> None:
    out = subprocess.run(["curl", "-sS", "-H", "Accept-Encoding: gzip", "--compressed",
                          f"{server.url}/static/app.js"], capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout == JS
    head = subprocess.run(["curl", "-sSI", f"{server.url}/static/site.css"],
                          capture_output=True, timeout=30, text=True)
    assert "HTTP/1.1 200 OK" in head.stdout
    assert "content-type: text/css; charset=utf-8" in head.stdout.lower()
    part = subprocess.run(["curl", "-sS", "-r", "10-19", f"{server.url}/static/app.js"],
                          capture_output=True, timeout=30)
    assert part.stdout == JS[10:20]


# ------------------------------------------------------------------- caching, index pages


def test_hashed_names_are_immutable(server: Server) -> None:
    for name in ("main.0123456789ab.css", "index-DeAdBeEf.js"):
        r = server.get(f"/static/{name}")
        assert r.header("Cache-Control") == "max-age=315360000, public, immutable", name


def test_index_pages_and_their_redirects(server: Server) -> None:
    r = server.get("/static/docs/")
    assert r.status == 200 and r.body == b"<h1>docs</h1>"
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    for path, location in [("/static/docs", "/static/docs/"),
                           ("/static/docs?x=1", "/static/docs/?x=1"),
                           ("/static/docs/index.html", "/static/docs/")]:
        r = raw(server, path)
        assert r.status == 302 and r.header("Location") == location, path


# -------------------------------------------------------------------------- path safety

ATTACKS = [
    "/static/../secret.txt",
    "/static/docs/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/docs%2f..%2f..%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..\\secret.txt",
    "/static/docs\\..\\..\\secret.txt",
    "/static/site.css%00.txt",
    "/static/%00",
    "/static/%c0%ae%c0%ae/secret.txt",
    "/static/%c0%ae%c0%ae%c0%afsecret.txt",
    "/static/%e0%80%ae%e0%80%ae/secret.txt",
    "/static/%ff%fe/secret.txt",
    "/static/link-out.txt",
    "/static/dir-out/page.txt",
    "/static/.env",
    "/static/.git/config",
    "/static/%2eenv",
    "/static/CON",
    "/static/con.css",
    "/static/NUL.txt",
    "/static/AUX",
    "/static/prn.js",
    "/static/COM1",
    "/static/lpt1.txt",
    "/static/site.css::$DATA",
    "/static/site.css.",
    "/static/site.css%20",
    "http://x/static/../secret.txt",
]


@pytest.mark.parametrize("path", ATTACKS)
def test_no_path_escapes_or_is_served_when_refused(server: Server, path: str) -> None:
    with server.connect() as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"))
        r = conn.response()
    assert r.status in (400, 404), (path, r)
    assert SECRET not in r.body
    assert b"hello" not in r.body, "refused paths never reach the app either"
    server.assert_serving("/static/site.css")


def test_settings_allow_symlinks_out_and_dotfiles(start_server, tree: Path) -> None:
    srv = start_server(APP, "--static-map", f"/static={tree}", "--static-allow-symlinks",
                       "--static-allow-dotfiles")
    assert srv.get("/static/link-out.txt").body == SECRET
    assert srv.get("/static/dir-out/page.txt").body == SECRET
    assert srv.get("/static/.env").body == SECRET
    # Still no way up the tree by path.
    assert raw(srv, "/static/../secret.txt").status == 404


# --------------------------------------------------------------- files changing under us


def test_changed_new_and_deleted_files(start_server, tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    f = root / "a.txt"
    f.write_bytes(b"version one")
    srv = start_server(APP, "--static-map", f"/s={root}", "--static-fallthrough")
    first = srv.get("/s/a.txt")
    assert first.body == b"version one"
    f.write_bytes(b"version two!")
    changed = time.monotonic()
    stale: list[float] = []  # when each request that still got the old file was sent

    def new_served() -> bool:
        sent = time.monotonic()
        if srv.get("/s/a.txt").body == b"version two!":
            return True
        stale.append(sent - changed)
        return False

    wait_for(new_served, timeout=5, message="the changed file")
    # docs/static-files.md: "served new within a second" of the change, whatever each
    # request itself took (measured from when the stale ones were sent).
    assert not stale or max(stale) < 1.0, stale
    assert srv.get("/s/a.txt").header("ETag") != first.header("ETag")
    # Same length, new content: the ETag still changes (modification time in nanoseconds).
    f.write_bytes(b"version six!")
    wait_for(lambda: srv.get("/s/a.txt").body == b"version six!", timeout=5, message="rewrite")
    f.unlink()
    wait_for(lambda: srv.get("/s/a.txt").body == b"hello", timeout=5,
             message="a deleted file falls through to the app")
    (root / "b.txt").write_bytes(b"new file")
    assert srv.get("/s/b.txt").body == b"new file"
    srv.assert_serving("/")


def test_a_file_replaced_while_sent_is_never_mixed(start_server, tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    size = 48 << 20
    f = root / "big.bin"
    f.write_bytes(b"A" * size)
    srv = start_server(APP, "--static-map", f"/s={root}")
    with srv.connect() as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        conn.send(http_request("/s/big.bin"))
        got = bytearray(conn.sock.recv(65536))
        # Replaced as deploy tools do: a new file renamed over the old one.
        tmp = root / "big.bin.new"
        tmp.write_bytes(b"B" * (size // 2))
        os.replace(tmp, f)
        while len(got) < size + 200:
            chunk = conn.sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            head_end = got.find(b"\r\n\r\n")
            if head_end >= 0 and len(got) - head_end - 4 >= size:
                break
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert f"Content-Length: {size}".encode() in head
    assert body == b"A" * size, "the old file, whole"
    wait_for(lambda: srv.get("/s/big.bin").body == b"B" * (size // 2), timeout=5,
             message="the new file next")


# ---------------------------------------------------------------- logs, metrics, settings


def test_access_log_and_metrics_count_static_responses(start_server, tree: Path,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    mport = free_port()
    srv = start_server(APP, "--static-map", f"/static={tree}", "--access-logfile", str(log),
                       "--metrics-bind", f"127.0.0.1:{mport}")
    assert srv.get("/static/site.css").status == 200
    etag = srv.get("/static/site.css").header("ETag") or ""
    assert raw(srv, "/static/site.css", headers=[("If-None-Match", etag)]).status == 304
    assert srv.get("/static/missing.css").status == 404
    assert srv.get("/").status == 200
    text = wait_for(lambda: (t := log.read_text()).count("\n") >= 5 and t,
                    message="5 access lines")
    assert f'"GET /static/site.css HTTP/1.1" 200 {len(CSS)}' in text, text
    assert '"GET /static/site.css HTTP/1.1" 304' in text
    assert '"GET /static/missing.css HTTP/1.1" 404' in text

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
            return resp.read().decode()

    metrics = wait_for(lambda: (t := scrape()) and
                       'ferrocorn_requests_total{status="2xx"} 3' in t and t,
                       message="metrics counting static responses")
    assert 'ferrocorn_requests_total{status="4xx"} 1' in metrics
    assert 'ferrocorn_requests_total{status="3xx"} 1' in metrics


def test_a_missing_directory_stops_the_start(tmp_path: Path) -> None:
    out = subprocess.run([ferrocorn_bin(), "-b", "127.0.0.1:0", "--pythonpath", str(APPS_DIR),
                          "--static-map", f"/s={tmp_path}/nowhere", APP],
                         capture_output=True, text=True, timeout=30, env=clean_env())
    assert out.returncode == 1
    assert f"{tmp_path}/nowhere" in out.stderr and "--static-map /s" in out.stderr
    for bad in ("static=x", "/s=", "/a/../b=x"):
        out = subprocess.run([ferrocorn_bin(), "--check-config", "--static-map", bad, APP],
                             capture_output=True, text=True, timeout=30, env=clean_env())
        assert out.returncode != 0 and "static-map" in out.stderr, (bad, out.stderr)
    out = subprocess.run([ferrocorn_bin(), "--check-config", "--static-immutable-pattern", "(",
                          APP], capture_output=True, text=True, timeout=30, env=clean_env())
    assert out.returncode != 0 and "regular expression" in out.stderr


def test_config_file_with_relative_dir_and_chdir(start_server, tree: Path, tmp_path: Path) -> None:
    conf = tmp_path / "conf.py"
    conf.write_text(textwrap.dedent(f"""\
        chdir = {str(tree.parent)!r}
        static_map = {{"/assets": "static"}}
        static_max_age = 0
        static_immutable_pattern = r"\\.css$"
    """))
    srv = start_server(APP, "-c", str(conf))
    r = srv.get("/assets/app.js")
    assert r.body == JS and r.header("Cache-Control") == "no-cache"
    assert srv.get("/assets/site.css").header("Cache-Control") == \
        "max-age=315360000, public, immutable"


def test_python_api_static_argument(tmp_path: Path, tree: Path) -> None:
    script = tmp_path / "serve_static.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(APPS_DIR)!r})
        import ferrocorn
        from basic import make_app
        code = ferrocorn.serve(make_app("api"), bind="127.0.0.1:0",
                               static={{"/static": {str(tree)!r}}})
    """))

    class ApiServer(Server):
        def command(self) -> list[str]:
            return [sys.executable, str(script)]

    srv = ApiServer("", cwd=tmp_path, pythonpath=False)
    srv.start()
    try:
        assert srv.get("/static/site.css").body == CSS
        assert srv.get("/").body == b"api"
    finally:
        srv.stop()


def test_many_files_stay_within_the_cache_bound(start_server, tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    n = 700  # more than the cache holds open
    for i in range(n):
        (root / f"f{i}.txt").write_bytes(str(i).encode())
    srv = start_server(APP, "--static-map", f"/m={root}")
    with srv.connect() as conn:
        for i in list(range(n)) + [0, 1, 2]:
            conn.send(http_request(f"/m/f{i}.txt"))
            assert conn.response().body == str(i).encode()
    pid = srv.worker_pids()[0]
    open_files = len(os.listdir(f"/proc/{pid}/fd"))
    assert open_files < 600, f"{open_files} descriptors open in the worker"


def test_over_a_unix_socket(start_server, tree: Path, tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    srv = start_server(APP, "--static-map", f"/static={tree}", binds=[f"unix:{sock}"])
    assert srv.get("/static/site.css").body == CSS
    r = srv.request("GET", "/static/big.bin", headers={"Range": "bytes=0-1048575"})
    assert r.status == 206 and len(r.body) == 1 << 20 and r.body.startswith(marker(0))


def test_reload_with_a_missing_directory_keeps_serving(start_server, tree: Path,
                                                      tmp_path: Path) -> None:
    conf = tmp_path / "conf.py"
    conf.write_text(f"static_map = {{'/static': {str(tree)!r}}}\n")
    srv = start_server(APP, "-c", str(conf))
    assert srv.get("/static/site.css").body == CSS
    conf.write_text(f"static_map = {{'/static': {str(tmp_path / 'gone')!r}}}\n")
    mark = srv.mark()
    srv.signal(signal.SIGHUP)
    line = srv.wait_log(r"reload: keeping the running configuration: .*gone", since=mark)
    assert "--static-map /static" in line
    assert srv.get("/static/site.css").body == CSS
    other = tmp_path / "other"
    other.mkdir()
    (other / "site.css").write_bytes(b"new map")
    conf.write_text(f"static_map = {{'/static': {str(other)!r}}}\n")
    srv.signal(signal.SIGHUP)
    wait_for(lambda: srv.get("/static/site.css").body == b"new map", timeout=15,
             message="the new map served by the new workers")
