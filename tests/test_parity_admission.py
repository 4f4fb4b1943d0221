"""The parity matrix (issues 26 and 28), admission: the request limits and their status codes
(413, 431, 414), ``--max-pending``'s 503 with Retry-After, and the forwarded headers of trusted
and untrusted peers as the environ (or the ASGI scope) shows them, over every protocol and
interface. The protocols, the interfaces and their declared differences: support/matrix.py.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from support import free_port, wait_for
from support.clients import Certs, Reply, curl
from support.matrix import PARITY, Matrix, Served, behaviour, environ_of

pytestmark = PARITY

LIMITS = ("--limit-request-body", "1000", "--limit-request-field_size", "2048",
          "--limit-request-fields", "30", "--limit-request-line", "1024")
FORWARDED = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]


@pytest.fixture(scope="module")
def limited(matrix: Matrix) -> Served:
    return matrix.serve(*LIMITS)


def assert_server_error(site: Served, reply: Reply, status: int) -> None:
    """An answer the server made itself: the status, and a body it declares the length of."""
    assert reply.status == status and reply.complete, reply
    assert reply.body and reply.header("content-length") == str(len(reply.body)), reply
    site.proto.check_connection_fields(reply)


# ------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("size,sent", [(5000, False), (5000, True), (2 << 20, True)],
                         ids=["declared", "sent", "uploading"])
def test_body_over_the_limit_is_413(limited: Served, size: int, sent: bool) -> None:
    """A Content-Length over --limit-request-body is refused on the head: a whole 413,
    whether the client waits (declared only), has sent the body along, or is still sending
    one larger than the windows and buffers between them (the 413 comes first; over HTTP/2 a
    RST_STREAM NO_ERROR may then stop the upload, RFC 9113 §8.1)."""
    reply = limited.client.request("POST", "/echo", [("Content-Type", "text/plain")],
                                   b"x" * size, withhold_body=not sent)
    assert_server_error(limited, reply, 413)
    assert limited.client.request("GET", "/r/health").status == 200


@behaviour("curl")
@pytest.mark.parametrize("size", [5_000, 3_000_000])
def test_curl_uploading_past_the_limit_gets_the_413(limited: Served, certs: Certs,
                                                   tmp_path: Path, size: int) -> None:
    """As the issue tried it: curl, still uploading when the 413 comes, shows the 413 and
    exits 0 over every protocol (over HTTP/2 the rest of the body is read and dropped rather
    than the stream reset under the upload, which curl reports as exit 92)."""
    upload = tmp_path / "upload"
    upload.write_bytes(b"x" * size)
    reply = curl(limited.proto, limited.server, certs, "/echo", upload=upload)
    assert reply.status == 413
    assert b"413" in reply.body


def test_body_at_the_limit_is_served(limited: Served) -> None:
    reply = limited.client.request("POST", "/echo", [("Content-Type", "text/plain")],
                                   b"y" * 1000)
    assert reply.status == 200 and json.loads(reply.body)["body"] == "y" * 1000, reply


def test_field_over_the_size_limit_is_431(limited: Served) -> None:
    reply = limited.client.request("GET", "/r/health", [("X-Big", "v" * 3000)])
    assert_server_error(limited, reply, 431)
    # Under it, served.
    reply = limited.client.request("GET", "/r/health", [("X-Big", "v" * 1500)])
    assert reply.status == 200, reply


def test_too_many_fields_is_431(limited: Served) -> None:
    reply = limited.client.request("GET", "/r/health", [(f"X-F{i}", "v") for i in range(40)])
    assert_server_error(limited, reply, 431)
    reply = limited.client.request("GET", "/r/health", [(f"X-F{i}", "v") for i in range(20)])
    assert reply.status == 200, reply


def test_request_line_over_the_limit_is_414(limited: Served) -> None:
    reply = limited.client.request("GET", "/r/health?" + "q" * 2000)
    assert_server_error(limited, reply, 414)
    reply = limited.client.request("GET", "/r/health?" + "q" * 500)
    assert reply.status == 200, reply


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def in_flight(port: int) -> float:
    for line in scrape(port).splitlines():
        if line.startswith("ferrocorn_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no ferrocorn_requests_in_flight")


def test_max_pending_answers_503_with_retry_after(matrix: Matrix, workdir: Path) -> None:
    """One app thread, one request allowed to wait for it: the one after gets 503 with
    Retry-After at once; the two held ones are then served. An ASGI app's /hold blocks the
    event loop, which then takes no exchange, as the one app thread takes none while held
    (an app that awaits instead leaves the loop free to take them all: docs/asgi.md)."""
    mport = free_port()
    site = matrix.serve("--threads", "1", "--max-pending", "1", "--no-inline",
                        "--metrics-bind", f"127.0.0.1:{mport}")
    name = site.tag
    go = workdir / f"go-{name}"
    started = [workdir / f"started-{name}-{i}" for i in range(2)]
    replies: list[Reply] = []
    threads = [threading.Thread(
        target=lambda s=s: replies.append(site.client.request(
            "GET", f"/hold?started={s}&go={go}")), daemon=True) for s in started]
    try:
        threads[0].start()
        wait_for(started[0].exists, message="the first request holding the app thread")
        threads[1].start()
        wait_for(lambda: in_flight(mport) == 2, message="the second request queued")
        reply = site.client.request("GET", "/r/health")
        assert_server_error(site, reply, 503)
        assert reply.header("retry-after") == "1", reply
    finally:
        go.write_text("go")
        for t in threads:
            t.join(15)
    assert [r.status for r in replies] == [200, 200], replies
    assert [r.body for r in replies] == [b"held", b"held"]
    assert site.client.request("GET", "/r/health").status == 200


# ------------------------------------------------------------------------------- forwarded


@behaviour("forwarded-headers")
def test_forwarded_headers_from_a_trusted_peer(limited: Served) -> None:
    """127.0.0.1 is trusted by default: its X-Forwarded-For and -Proto are the client's
    address and scheme; X-Forwarded-Host is not applied unless --forwarded-headers says."""
    env = environ_of(limited, limited.client.request(
        "GET", "/env", FORWARDED + [("X-Forwarded-Host", "evil.example")]))
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == limited.client.authority
    assert env["HTTP_X_FORWARDED_HOST"] == "evil.example"
    # The right-most untrusted hop is the client, not the left-most one a client can write.
    env = environ_of(limited, limited.client.request(
        "GET", "/env", [("X-Forwarded-For", "6.6.6.6, 198.51.100.4, 127.0.0.1")]))
    assert env["REMOTE_ADDR"] == "198.51.100.4"


@behaviour("forwarded-headers")
def test_malformed_forwarded_scheme_from_a_trusted_peer_is_400(limited: Served) -> None:
    reply = limited.client.request("GET", "/env", [("X-Forwarded-Proto", "gopher")])
    assert_server_error(limited, reply, 400)
    reply = limited.client.request("GET", "/env", [("X-Forwarded-Proto", "https"),
                                                   ("X-Forwarded-Ssl", "off")])
    assert_server_error(limited, reply, 400)


@behaviour("untrusted-peer")
def test_forwarded_headers_from_an_untrusted_peer_are_plain_headers(matrix: Matrix) -> None:
    site = matrix.serve("--forwarded-allow-ips", "10.9.9.9")
    env = environ_of(site, site.client.request("GET", "/env", FORWARDED))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == site.proto.scheme
    assert env["HTTP_HOST"] == site.client.authority
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    # Nothing malformed is refused from a peer whose word is not taken.
    env = environ_of(site, site.client.request("GET", "/env", [("X-Forwarded-Proto", "gopher")]))
    assert env["wsgi.url_scheme"] == site.proto.scheme


def test_field_names_with_underscores_never_pass_as_forwarded(limited: Served) -> None:
    """X_Forwarded_For is dropped, so it can never be taken for X-Forwarded-For."""
    env = environ_of(limited, limited.client.request("GET", "/env", [("X_Forwarded_For", "6.6.6.6"),
                                                         ("X-Other", "kept")]))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["HTTP_X_OTHER"] == "kept"
