"""h2c by upgrade (issue 17; RFC 7540 §3.2): ``--http2-cleartext upgrade|both``. A trusted
peer's HTTP/1.1 request with ``Upgrade: h2c`` is answered 101 and then on HTTP/2 as stream 1;
the connection goes on as HTTP/2. Anyone else's Upgrade is ignored (HTTP/1.1), as is the
Upgrade of a request with a body.

Clients: ``curl --http2`` over ``http://`` (which upgrades) and Python's ``h2`` package
(``initiate_upgrade_connection``).
"""

from __future__ import annotations

import json
import socket
import subprocess

import h2.config
import h2.connection
from test_http2 import PREFACE, SETTINGS, Client, frame

from support import Server, http_request

UPGRADE = ("--http2-cleartext", "upgrade")


class Upgraded(Client):
    """An ``h2`` client that starts with an HTTP/1.1 upgrade request for ``path``; its
    response is stream 1."""

    def __init__(self, server: Server, path: str = "/environ",
                 extra: list[tuple[str, str]] | None = None) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.host = f"{server.host}:{server.port}"
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        settings = self.conn.initiate_upgrade_connection().decode()
        preamble = self.conn.data_to_send()
        headers = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                   ("HTTP2-Settings", settings)] + (extra or [])
        self.sock.sendall(http_request(path, host=self.host, headers=headers))
        # The 101's head, byte by byte: what follows it is HTTP/2, for the h2 package.
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            byte = self.sock.recv(1)
            assert byte, f"closed during the 101: {bytes(head)!r}"
            head += byte
        self.switch = bytes(head)
        self.sock.sendall(preamble)
        self.status, self.headers, self.informational = {}, {}, {}
        self.body = {1: bytearray()}
        self.ended, self.reset = set(), {}
        self.goaway, self.closed, self.auto_ack = None, False, True


def test_curl_upgrades_and_reuses_the_connection() -> None:
    server = Server("h2_app:app", *UPGRADE).start()
    try:
        out = subprocess.run(
            ["curl", "-sv", "--http2", f"{server.url}/environ", f"{server.url}/hello"],
            capture_output=True, timeout=30, text=True, check=True)
        log = out.stderr
        assert "< HTTP/1.1 101 Switching Protocols" in log, log
        assert "< HTTP/2 200" in log, log
        # The second URL went over the same, now HTTP/2, connection.
        assert "Re-using existing connection" in log, log
        assert log.count("< HTTP/2 200") == 2, log
        env = json.loads(out.stdout[:-len("hello")])
        assert out.stdout.endswith("hello")
        assert env["SERVER_PROTOCOL"] == "HTTP/2"
        assert env["HTTP_HOST"] == f"{server.host}:{server.port}"
        # The upgrade's own fields were for the HTTP/1.1 hop only.
        assert env["HTTP_UPGRADE"] is None and env["HTTP_CONNECTION"] is None
        assert env["HTTP_HTTP2_SETTINGS"] is None
    finally:
        server.stop()


def test_h2_library_upgrade_then_more_streams() -> None:
    server = Server("h2_app:app", *UPGRADE).start()
    try:
        c = Upgraded(server, "/environ?via=upgrade",
                     extra=[("TE", "gzip"), ("X-Hop", "1"),
                            ("Connection", "X-Hop"), ("X-Test", "yes")])
        assert c.switch.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), c.switch
        assert b"upgrade: h2c" in c.switch.lower()
        c.wait(lambda: c.done(1), message="stream 1's response")
        assert c.status[1] == 200
        env = json.loads(c.body[1])
        assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["QUERY_STRING"] == "via=upgrade"
        assert env["HTTP_X_TEST"] == "yes" and env["HTTP_HOST"] == c.host
        for hop in ("HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_HTTP2_SETTINGS", "HTTP_TE",
                    "HTTP_X_HOP"):
            assert env[hop] is None, (hop, env[hop])
        # The connection is HTTP/2 from now on: stream 3, and a body on stream 5.
        assert c.get("/hello") == (200, b"hello")
        assert 3 in c.ended
        sid = c.request("/environ", method="POST", body=b"on h2",
                        headers=[("content-length", "5")])
        assert sid == 5
        c.wait(lambda: c.done(sid))
        assert json.loads(c.body[sid])["body"] == "on h2"
        c.close()
    finally:
        server.stop()


def test_a_large_upgrading_head_goes_on_in_continuation_frames() -> None:
    server = Server("h2_app:app", *UPGRADE, "--limit-request-field_size", "40000").start()
    try:
        c = Upgraded(server, extra=[("X-Big", "b" * 30000)])
        c.wait(lambda: c.done(1), message="stream 1's response")
        assert c.status[1] == 200
        assert json.loads(c.body[1])["HTTP_X_BIG"] == "b" * 30000
    finally:
        server.stop()


def raw_upgrade(path: str = "/environ", method: str = "GET", body: bytes = b"",
                host: str = "localhost") -> bytes:
    return http_request(path, method=method, host=host, body=body, headers=[
        ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
        ("HTTP2-Settings", "AAMAAABkAAQAAP__")])


def test_untrusted_peers_and_the_default_get_http1() -> None:
    """Off by default, and from a peer outside --forwarded-allow-ips: the Upgrade is ignored
    and the request answered as HTTP/1.1, on a connection that stays HTTP/1.1."""
    servers = [Server("h2_app:app"),
               Server("h2_app:app", *UPGRADE, "--forwarded-allow-ips", "10.9.9.9")]
    try:
        for server in servers:
            server.start()
            with server.connect() as conn:
                conn.send(raw_upgrade())
                resp = conn.response()
                assert resp.version == "HTTP/1.1" and resp.status == 200
                assert json.loads(resp.body)["SERVER_PROTOCOL"] == "HTTP/1.1"
                conn.send(http_request("/hello"))
                assert conn.response().body == b"hello"
    finally:
        for server in servers:
            server.stop()


def test_an_upgrade_with_a_body_is_served_as_http1() -> None:
    server = Server("h2_app:app", *UPGRADE).start()
    try:
        with server.connect() as conn:
            conn.send(raw_upgrade(method="POST", body=b"payload"))
            resp = conn.response()
            assert resp.version == "HTTP/1.1" and resp.status == 200
            env = json.loads(resp.body)
            assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["body"] == "payload"
            conn.send(http_request("/hello"))
            assert conn.response().body == b"hello"
    finally:
        server.stop()


def test_both_takes_prior_knowledge_and_upgrades() -> None:
    server = Server("h2_app:app", "--http2-cleartext", "both").start()
    try:
        pk = Client(server)
        assert pk.get("/hello") == (200, b"hello")
        up = Upgraded(server, "/hello")
        up.wait(lambda: up.done(1))
        assert up.status[1] == 200 and bytes(up.body[1]) == b"hello"
    finally:
        server.stop()


def test_no_http2_after_the_101_closes_the_connection() -> None:
    """A client that asked to switch and then does not speak HTTP/2 (no preface, or a first
    frame other than SETTINGS) is closed; others are served."""
    server = Server("h2_app:app", *UPGRADE, "--header-timeout", "2").start()
    try:
        for after in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                      PREFACE + frame(6, 0, 0, b"\0" * 8),
                      b""):
            with server.connect() as conn:
                conn.send(raw_upgrade())
                resp = conn.response(skip_interim=False)
                assert resp.status == 101
                conn.send(after)
                # Nothing of HTTP/2 comes back, not even the server's SETTINGS.
                assert conn.read_until_close(5) == b""
        server.assert_serving("/hello")
        with server.connect() as conn:
            # The preface with its SETTINGS is enough for stream 1 to be answered.
            conn.send(raw_upgrade("/hello"))
            assert conn.response(skip_interim=False).status == 101
            conn.send(PREFACE + frame(SETTINGS, 0, 0))
            conn.sock.settimeout(5)
            got = b""
            while b"hello" not in got:
                data = conn.sock.recv(65536)
                assert data, got
                got += data
    finally:
        server.stop()


def test_upgrade_over_a_unix_socket(tmp_path) -> None:
    server = Server("h2_app:app", *UPGRADE, binds=[f"unix:{tmp_path}/up.sock"]).start()
    try:
        out = subprocess.run(
            ["curl", "-sS", "--http2", "--unix-socket", f"{tmp_path}/up.sock",
             "-w", " %{http_version}", "http://localhost/hello"],
            capture_output=True, timeout=30, text=True, check=True)
        assert out.stdout == "hello 2", out
    finally:
        server.stop()
