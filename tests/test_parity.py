"""The parity matrix (issues 26 and 28), responses: every PEP 3333 response path and its ASGI
counterpart, app errors, early hints and 100-continue give the same answers over HTTP/1.1,
HTTP/1.1 over TLS, HTTP/2 over TLS, h2c and uwsgi, from a WSGI app (tests/apps/parity_app.py)
and from an ASGI app (tests/apps/parity_asgi.py). The protocols, the interfaces and their
declared differences: support/matrix.py. The other parity modules: test_parity_static.py
(static files), test_parity_admission.py (limits, --max-pending, forwarded headers),
test_parity_observe.py (access log, metrics).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from support import wait_for
from support.clients import Reply
from support.matrix import PARITY, Matrix, Served, behaviour, environ_of

pytestmark = PARITY

FILE_BYTES = bytes(range(256)) * 1200  # 300 KiB: a file body over several windows
#: What the app records once it is done with a file response: WSGI's file_wrapper closed the
#: file; ASGI's send() of http.response.pathsend returned.
FILE_DONE = {"wsgi": "file closed", "asgi": "pathsend done"}


@pytest.fixture(scope="module")
def site(matrix: Matrix) -> Served:
    return matrix.serve("--limit-request-body", str(2 << 20))


@pytest.fixture(scope="module")
def data_file(workdir: Path) -> Path:
    path = workdir / "data.bin"
    path.write_bytes(FILE_BYTES)
    return path


def records(path: Path) -> list[str]:
    """What the app's iterables and files recorded (responses.py ``record=``)."""
    return path.read_text().splitlines() if path.exists() else []


def wait_record(path: Path, line: str) -> list[str]:
    return wait_for(lambda: line in records(path) and records(path),
                    message=f"{line!r} recorded in {path}")


def assert_cut_short(site: Served, reply: Reply, sent: bytes) -> None:
    """The response the app failed in the middle of does not look whole (see
    ``Proto.cut_short``): what arrived is a prefix of what the app sent."""
    assert not reply.complete, reply
    if site.proto.cut_short == "reset":
        assert reply.reset is not None, reply
        assert reply.status in (0, 200) and sent.startswith(reply.body), reply
    else:
        assert reply.status == 200 and reply.body == sent, reply


# ------------------------------------------------------------------------------- environ


def test_environ_of_a_request(site: Served) -> None:
    reply = site.client.request("POST", "/env?x=1&y=%2F", [("X-Test", "yes"),
                                                           ("Content-Type", "text/plain")],
                                b"hello body")
    env = environ_of(site, reply)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/env" and env["QUERY_STRING"] == "x=1&y=%2F"
    assert env["SERVER_PROTOCOL"] == site.proto.server_protocol
    assert env["wsgi.url_scheme"] == site.proto.scheme
    assert env["HTTP_HOST"] == site.client.authority
    assert env["HTTP_X_TEST"] == "yes"
    assert env["CONTENT_LENGTH"] == "10" and env["CONTENT_TYPE"] == "text/plain"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert json.loads(reply.body)["body"] == "hello body"
    if site.proto.tls:
        assert env["HTTPS"] == "on" and str(env["SSL_PROTOCOL"]).startswith("TLSv1."), env
    else:
        assert "HTTPS" not in env and "SSL_PROTOCOL" not in env, env
    if site.interface == "asgi":
        # What only the scope says: the path as sent, and the extensions.
        scope = json.loads(reply.body)["scope"]
        assert scope["http_version"] == ("2" if site.proto.http2 else "1.1"), scope
        assert (scope["raw_path"], scope["root_path"]) == ("/env", ""), scope
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}, scope
        assert "http.response.pathsend" in scope["extensions"], scope
        assert ("tls" in scope["extensions"]) == site.proto.tls, scope


@pytest.mark.parametrize("size", [1, 70_000, 1 << 20])
def test_request_body_read_in_pieces(site: Served, size: int) -> None:
    """wsgi.input gives the body whole, in the pieces the app asks for, and ASGI's receive()
    in http.request messages of at most 64 KiB, over every protocol's framing (and HTTP/2's
    windows)."""
    body = os.urandom(size)
    reply = site.client.request("POST", "/echo?mode=hash",
                                [("Content-Type", "application/octet-stream")], body)
    assert reply.status == 200, reply
    got = json.loads(reply.body)
    assert got["length"] == size and got["sha256"] == hashlib.sha256(body).hexdigest(), got
    assert got["largest"] <= 65536


@behaviour("readline")
def test_request_body_by_lines(site: Served) -> None:
    reply = site.client.request("POST", "/echo?mode=readline",
                                [("Content-Type", "text/plain")], b"a\nbb\n\nccc")
    assert reply.status == 200, reply
    got = json.loads(reply.body)
    assert got["pieces"] == ["a\n", "bb\n", "\n", "ccc"] and got["after"] == ["", "", "", ""]


def test_request_body_left_unread(site: Served) -> None:
    """An app that never reads the body answers; the server serves on."""
    reply = site.client.request("POST", "/echo?mode=noread",
                                [("Content-Type", "text/plain")], b"z" * 50_000)
    assert reply.status == 200 and json.loads(reply.body)["body"] == "", reply
    assert site.client.request("GET", "/r/health").status == 200


# ------------------------------------------------------------------------------- response paths


def test_list_body_with_length(site: Served) -> None:
    reply = site.client.request("GET", "/r/health")
    assert (reply.status, reply.body, reply.complete) == (200, b"ok", True), reply
    assert reply.header("content-length") == "2"
    assert reply.header("content-type") == "text/plain"
    assert reply.framing == ("h2" if site.proto.http2 else "length"), reply
    site.proto.check_connection_fields(reply)


def test_generator_without_length(site: Served) -> None:
    """An empty piece in the middle does not end the body; the protocol's own framing
    delimits it (chunked, DATA frames, or the close over uwsgi)."""
    reply = site.client.request("GET", "/r/gen")
    assert (reply.status, reply.body, reply.complete) == (200, b"alpha-beta-gamma", True), reply
    assert reply.header("x-gen") == "1"
    assert reply.framing == site.proto.unsized_framing, reply
    site.proto.check_connection_fields(reply)


@behaviour("write-callable")
@pytest.mark.parametrize("length", [False, True], ids=["unsized", "sized"])
def test_write_callable(site: Served, workdir: Path, length: bool) -> None:
    rec = workdir / f"write-{site.tag}-{length}"
    reply = site.client.request("GET", f"/r/write?record={rec}" + ("&cl=1" if length else ""))
    assert (reply.status, reply.body, reply.complete) == (200, b"one-two-three", True), reply
    if length:
        assert reply.header("content-length") == "13"
    else:
        assert reply.framing == site.proto.unsized_framing, reply
    wait_record(rec, "close 1")


def test_file_response(site: Served, workdir: Path, data_file: Path) -> None:
    """A file the server sends itself (sendfile where it can): wsgi.file_wrapper, or
    http.response.pathsend."""
    rec = workdir / f"file-{site.tag}"
    reply = site.client.request("GET", f"/r/file?path={data_file}&record={rec}")
    assert reply.status == 200 and reply.complete, reply
    assert reply.header("content-length") == str(len(FILE_BYTES))
    assert reply.body == FILE_BYTES
    wait_record(rec, FILE_DONE[site.interface])


def test_file_wrapper_from_an_offset(site: Served, workdir: Path, data_file: Path) -> None:
    rec = workdir / f"file-offset-{site.tag}"
    reply = site.client.request("GET", f"/r/file?path={data_file}&record={rec}&offset=1000")
    assert reply.status == 200 and reply.complete, reply
    assert reply.header("content-length") == str(len(FILE_BYTES) - 1000)
    assert reply.body == FILE_BYTES[1000:]
    wait_record(rec, "file closed")


@behaviour("file-like")
def test_file_wrapper_without_fileno(site: Served, workdir: Path, data_file: Path) -> None:
    rec = workdir / f"file-like-{site.tag}"
    reply = site.client.request("GET", f"/r/file_like?path={data_file}&record={rec}")
    assert reply.status == 200 and reply.complete, reply
    assert reply.body == FILE_BYTES
    wait_record(rec, "readonly closed")


def test_empty_body(site: Served) -> None:
    reply = site.client.request("GET", "/r/empty")
    assert (reply.status, reply.body, reply.complete) == (200, b"", True), reply
    assert reply.header("content-length") in (None, "0"), reply


@behaviour("iterable-close")
def test_close_is_called(site: Served, workdir: Path) -> None:
    rec = workdir / f"close-{site.tag}"
    reply = site.client.request("GET", f"/r/close/normal?record={rec}")
    assert (reply.status, reply.body, reply.complete) == (200, b"abc", True), reply
    wait_record(rec, "close 3")


@pytest.mark.app_errors
@behaviour("iterable-close")
def test_close_is_called_when_the_iterable_raises(site: Served, workdir: Path) -> None:
    rec = workdir / f"close-raise-{site.tag}"
    reply = site.client.request("GET", f"/r/close/raise?record={rec}")
    assert (b"x" * 1000 + b"y" * 1000).startswith(reply.body[:2000]), reply
    wait_record(rec, "close 2")


def test_head_drops_the_body(site: Served) -> None:
    get = site.client.request("GET", "/r/head")
    head = site.client.request("HEAD", "/r/head")
    assert get.status == head.status == 200
    assert get.body == b"the body of a GET" and head.body == b"", head
    assert head.header("x-custom") == "same-for-head"
    assert head.header("content-length") == get.header("content-length") == "17"
    # A generator's body is dropped as well, its fields kept.
    head = site.client.request("HEAD", "/r/gen")
    assert (head.status, head.body, head.header("x-gen")) == (200, b"", "1"), head
    site.proto.check_connection_fields(head)


def test_204_and_304_carry_no_body(site: Served) -> None:
    reply = site.client.request("GET", "/r/204")
    assert (reply.status, reply.body, reply.complete) == (204, b"", True), reply
    assert reply.header("content-length") is None and reply.header("transfer-encoding") is None
    reply = site.client.request("GET", "/not-modified")
    assert (reply.status, reply.body, reply.complete) == (304, b"", True), reply
    assert reply.header("etag") == '"parity-v1"' and reply.header("x-route") == "not-modified"
    assert reply.header("transfer-encoding") is None


def test_latin1_field_value(site: Served) -> None:
    reply = site.client.request("GET", "/r/latin1")
    assert reply.status == 200 and reply.body == b"latin", reply
    assert reply.header("x-latin") == "caf\u00e9 \u00f1 \u00ff"


def test_many_pieces(site: Served) -> None:
    reply = site.client.request("GET", "/r/many?n=300")
    assert reply.status == 200 and reply.complete, reply
    assert reply.body == b"".join(bytes([i % 256]) * (i + 1) for i in range(300))


def test_large_streamed_body(site: Served) -> None:
    size, chunk = 4 << 20, 65536
    reply = site.client.request("GET", f"/r/big?size={size}&chunk={chunk}")
    assert reply.status == 200 and reply.complete, reply
    assert reply.header("content-length") == str(size)
    assert reply.body == b"".join(bytes([i % 256]) * chunk for i in range(size // chunk))


@behaviour("exc-info")
def test_exc_info_replaces_the_headers(site: Served) -> None:
    reply = site.client.request("GET", "/r/exc_info/replace")
    assert (reply.status, reply.body) == (500, b"replaced"), reply
    assert reply.header("x-second") == "1" and reply.header("x-first") is None


# ------------------------------------------------------------------------------- app errors


@pytest.mark.app_errors
@pytest.mark.parametrize("route", ["before", "after_start", "first_iter"])
def test_app_error_before_the_body_is_a_500_with_length(site: Served, route: str) -> None:
    """Nothing was sent yet: the server answers 500 itself, with a Content-Length."""
    marker = f"{route}-{site.tag}"
    mark = site.server.mark()
    reply = site.client.request("GET", f"/r/raise/{route}?marker={marker}")
    assert reply.status == 500 and reply.complete, reply
    assert reply.body, reply
    assert reply.header("content-length") == str(len(reply.body)), reply
    site.proto.check_connection_fields(reply)
    site.server.wait_log(f"boom-{route.replace('_', '-')}-{marker}", since=mark)
    assert site.client.request("GET", "/r/health").status == 200


@pytest.mark.app_errors
def test_app_error_mid_body_with_length_truncates(site: Served) -> None:
    """The head went out declaring 3000 bytes; 1000 came, then the error: the response must
    not look whole (HTTP/1.x: the connection ends short; HTTP/2: the stream is reset)."""
    reply = site.client.request("GET", f"/r/raise/mid_body?cl=1&marker={site.tag}")
    assert_cut_short(site, reply, b"m" * 1000)
    assert site.client.request("GET", "/r/health").status == 200


@pytest.mark.app_errors
@behaviour("unsized-truncation")
def test_app_error_mid_body_without_length_truncates(site: Served) -> None:
    """No Content-Length: chunked without its last chunk, or a reset stream."""
    reply = site.client.request("GET", f"/r/raise/mid_body?marker=u-{site.tag}")
    assert_cut_short(site, reply, b"m" * 1000)
    assert site.client.request("GET", "/r/health").status == 200


@pytest.mark.app_errors
@behaviour("exc-info")
def test_exc_info_after_the_head_was_sent_reraises(site: Served, workdir: Path) -> None:
    """start_response(exc_info) once the head went out re-raises the app's exception (PEP
    3333), and the response is not completed as if all were well."""
    rec = workdir / f"after-sent-{site.tag}"
    reply = site.client.request("GET", f"/r/exc_info/after_sent?record={rec}&marker=x")
    assert reply.status in (0, 200) and b"partial-body".startswith(reply.body), reply
    assert b"should not get here" not in reply.body
    wait_record(rec, "reraised same=True")


# ------------------------------------------------------------------------------- interim responses


@behaviour("interim")
def test_early_hints(site: Served) -> None:
    reply = site.client.request("GET", "/hints/two")
    assert reply.status == 200 and reply.complete, reply
    assert [i.status for i in reply.interim] == [103, 103], reply
    first, second = reply.interim
    assert [v for k, v in first.headers if k == "link"] == ["</style.css>; rel=preload; as=style"]
    assert [v for k, v in second.headers if k == "link"] == [
        "</app.js>; rel=preload; as=script",
        "</font.woff2>; rel=preload; as=font; crossorigin"]
    # After start_response but before any body: still sent.
    reply = site.client.request("GET", "/hints/after-start")
    assert [i.status for i in reply.interim] == [103] and reply.body == b"ok", reply


@behaviour("interim")
def test_early_hints_given_as_bytes(site: Served) -> None:
    reply = site.client.request("GET", "/hints/bytes")
    assert reply.status == 200, reply
    assert [(i.status, [v for k, v in i.headers if k == "link"]) for i in reply.interim] == [
        (103, ["</b.css>; rel=preload"])], reply


def test_early_hints_once_the_response_started_are_dropped(site: Served) -> None:
    reply = site.client.request("GET", "/hints/late")
    assert (reply.status, reply.body, reply.interim) == (200, b"first second", []), reply
    # An empty list of hints sends nothing.
    reply = site.client.request("GET", "/hints/empty")
    assert reply.status == 200 and reply.interim == [], reply


@behaviour("continue")
def test_100_continue_when_the_app_reads(site: Served) -> None:
    reply = site.client.request("POST", "/echo", [("Content-Type", "text/plain")], b"hello",
                                expect_continue=True)
    assert [i.status for i in reply.interim] == [100], reply
    assert reply.status == 200 and json.loads(reply.body)["body"] == "hello", reply


@behaviour("continue")
def test_no_100_continue_when_the_app_answers_without_reading(site: Served) -> None:
    reply = site.client.request("POST", "/r/health", [("Content-Type", "text/plain")],
                                b"hello", expect_continue=True)
    assert (reply.status, reply.body, reply.interim) == (200, b"ok", []), reply
