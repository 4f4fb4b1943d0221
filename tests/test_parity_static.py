"""The parity matrix (issues 26 and 28), static files: ``--static-map`` answers the same over
every protocol and in front of either interface's app, with the same fields as HTTP/1.1 with
a WSGI app (each reply is compared with such a server's for the same file): ETag,
Last-Modified, conditional requests, ranges, precompressed siblings, misses, HEAD and methods.
The protocols, the interfaces and their declared differences: support/matrix.py.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from support import running_server
from support.clients import Certs, Http1Client, Reply, curl
from support.matrix import APP_404, PARITY, PARITY_APP, Matrix, Served, behaviour

pytestmark = PARITY

CSS = b"body { color: #333; }\n" * 60
JSON = b'{"items": [' + b",".join(b'"item %d"' % i for i in range(400)) + b"]}"
#: A stand-in for a .br sibling: the server sends the bytes as they are.
BROTLI = b"\x1b\x8b\x02\x00fake-brotli-bytes" * 8
BIG = os.urandom(300 * 1024)  # past the in-memory cache (16 KiB): sent from the file

#: The fields a static answer is made of: the same over every protocol.
FIELDS = ("content-type", "content-length", "etag", "last-modified", "cache-control",
          "accept-ranges", "vary", "content-encoding", "content-range")


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    (root / "site.css").write_bytes(CSS)
    (root / "data.json").write_bytes(JSON)
    (root / "data.json.gz").write_bytes(gzip.compress(JSON))
    (root / "data.json.br").write_bytes(BROTLI)
    (root / "big.bin").write_bytes(BIG)
    (root / "app.0123456789ab.css").write_bytes(CSS)
    return root


def static_flags(static_dir: Path) -> tuple[str, ...]:
    return ("--static-map", f"/static={static_dir}")


@pytest.fixture(scope="module")
def site(matrix: Matrix, static_dir: Path) -> Served:
    return matrix.serve(*static_flags(static_dir))


@pytest.fixture(scope="module")
def reference(static_dir: Path) -> Iterator[Http1Client]:
    """HTTP/1.1 in cleartext with the WSGI app, the yardstick each protocol and interface's
    static answers are held to."""
    with running_server(PARITY_APP, *static_flags(static_dir)) as server:
        yield Http1Client(server)


def fields(reply: Reply) -> dict[str, str | None]:
    return {name: reply.header(name) for name in FIELDS}


def same_as_http11(reference: Http1Client, reply: Reply, method: str, path: str,
                   headers: list[tuple[str, str]] | None = None) -> Reply:
    """``reply`` has the status, fields and body the HTTP/1.1 server gives the same request."""
    expected = reference.request(method, path, headers or [])
    assert reply.status == expected.status, (reply, expected)
    assert fields(reply) == fields(expected), (reply, expected)
    assert reply.body == expected.body, (reply, expected)
    return expected


def test_file_with_the_same_fields_as_http11(site: Served, static_dir: Path,
                                             reference: Http1Client) -> None:
    reply = site.client.request("GET", "/static/site.css")
    assert reply.status == 200 and reply.complete, reply
    assert reply.body == CSS
    assert reply.header("content-type") == "text/css; charset=utf-8", reply
    assert reply.header("content-length") == str(len(CSS))
    assert reply.header("etag"), reply
    mtime = (static_dir / "site.css").stat().st_mtime
    assert reply.header("last-modified") == formatdate(mtime, usegmt=True)
    assert reply.header("cache-control") == "max-age=60, public"
    assert reply.header("accept-ranges") == "bytes"
    site.proto.check_connection_fields(reply)
    same_as_http11(reference, reply, "GET", "/static/site.css")


@behaviour("curl")
@pytest.mark.parametrize("path,asked", [
    ("/static/site.css", []),
    ("/static/data.json", [("Accept-Encoding", "br, gzip")]),
    ("/static/big.bin", [("Range", "bytes=100-199")]),
], ids=["file", "precompressed", "range"])
def test_curl_gets_the_fields_of_http11(site: Served, certs: Certs, reference: Http1Client,
                                        path: str, asked: list[tuple[str, str]]) -> None:
    """As the issue checks it: curl over the protocol gets what HTTP/1.1 gives."""
    reply = curl(site.proto, site.server, certs, path, asked)
    assert reply.version == ("HTTP/2" if site.proto.http2 else "HTTP/1.1"), reply
    same_as_http11(reference, reply, "GET", path, asked)


def test_hashed_name_is_immutable(site: Served) -> None:
    reply = site.client.request("GET", "/static/app.0123456789ab.css")
    assert reply.status == 200 and reply.body == CSS, reply
    assert reply.header("cache-control") == "max-age=315360000, public, immutable", reply


def test_large_file_whole(site: Served, reference: Http1Client) -> None:
    reply = site.client.request("GET", "/static/big.bin")
    assert reply.status == 200 and reply.complete, reply
    assert reply.header("content-length") == str(len(BIG))
    assert reply.body == BIG
    same_as_http11(reference, reply, "GET", "/static/big.bin")


def test_304_on_if_none_match_and_if_modified_since(site: Served,
                                                    reference: Http1Client) -> None:
    first = site.client.request("GET", "/static/site.css")
    etag, modified = first.header("etag"), first.header("last-modified")
    assert first.status == 200 and etag and modified, first
    for asked in ([("If-None-Match", etag)], [("If-Modified-Since", modified)]):
        reply = site.client.request("GET", "/static/site.css", asked)
        assert (reply.status, reply.body) == (304, b""), (asked, reply)
        assert reply.header("etag") == etag
        same_as_http11(reference, reply, "GET", "/static/site.css", asked)
    # Another tag: the whole file.
    reply = site.client.request("GET", "/static/site.css", [("If-None-Match", '"other"')])
    assert reply.status == 200 and reply.body == CSS, reply


def test_range(site: Served, reference: Http1Client) -> None:
    reply = site.client.request("GET", "/static/big.bin", [("Range", "bytes=10-19")])
    assert reply.status == 206, reply
    assert reply.body == BIG[10:20]
    assert reply.header("content-range") == f"bytes 10-19/{len(BIG)}"
    assert reply.header("content-length") == "10"
    same_as_http11(reference, reply, "GET", "/static/big.bin", [("Range", "bytes=10-19")])
    reply = site.client.request("GET", "/static/big.bin", [("Range", "bytes=-100")])
    assert reply.status == 206 and reply.body == BIG[-100:], reply
    reply = site.client.request("GET", "/static/big.bin", [("Range", f"bytes={len(BIG)}-")])
    assert reply.status == 416, reply
    assert reply.header("content-range") == f"bytes */{len(BIG)}"


@pytest.mark.parametrize("accept,coding,body", [
    ("br, gzip", "br", BROTLI),
    ("gzip", "gzip", gzip.compress(JSON)),
    ("", None, JSON),
], ids=["br", "gzip", "identity"])
def test_precompressed_sibling_by_accept_encoding(site: Served, reference: Http1Client,
                                                  static_dir: Path, accept: str,
                                                  coding: str | None, body: bytes) -> None:
    asked = [("Accept-Encoding", accept)] if accept else []
    reply = site.client.request("GET", "/static/data.json", asked)
    assert reply.status == 200 and reply.complete, reply
    assert reply.header("content-encoding") == coding, reply
    sibling = {"br": ".br", "gzip": ".gz", None: ""}[coding]
    assert reply.body == (static_dir / f"data.json{sibling}").read_bytes()
    assert reply.header("content-length") == str(len(reply.body))
    assert reply.header("vary") == "Accept-Encoding"
    assert reply.header("content-type") == "application/json; charset=utf-8", reply
    same_as_http11(reference, reply, "GET", "/static/data.json", asked)


def test_miss_is_the_servers_404_not_the_apps(site: Served, reference: Http1Client) -> None:
    reply = site.client.request("GET", "/static/nope.css")
    assert reply.status == 404, reply
    assert reply.body != APP_404, "the static miss went to the app"
    assert reply.status == reference.request("GET", "/static/nope.css").status
    # Outside the mapped prefix, the app answers.
    reply = site.client.request("GET", "/elsewhere.css")
    assert (reply.status, reply.body) == (404, APP_404), reply


def test_head_has_the_fields_of_get_and_no_body(site: Served, reference: Http1Client) -> None:
    get = site.client.request("GET", "/static/big.bin")
    head = site.client.request("HEAD", "/static/big.bin")
    assert (head.status, head.body) == (200, b""), head
    assert fields(head) == fields(get), (head, get)
    assert head.header("content-length") == str(len(BIG))
    same_as_http11(reference, head, "HEAD", "/static/big.bin")


def test_other_methods_are_405(site: Served, reference: Http1Client) -> None:
    reply = site.client.request("POST", "/static/site.css", [("Content-Type", "text/plain")],
                                b"x")
    assert reply.status == 405, reply
    assert reply.status == reference.request("POST", "/static/site.css",
                                             [("Content-Type", "text/plain")], b"x").status
    assert "GET" in (reply.header("allow") or ""), reply


def test_app_and_static_files_side_by_side(site: Served) -> None:
    """One server answers its app's routes and its static files, one after the other."""
    assert site.client.request("GET", "/r/health").body == b"ok"
    reply = site.client.request("GET", "/static/site.css")
    assert reply.status == 200 and reply.body == CSS, reply

