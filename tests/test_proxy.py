"""Proxy setups: forwarded headers honoured only from trusted peers, configurable header names,
PROXY protocol, and a real nginx in front (TCP, unix socket, an upstream with failover).

Loopback addresses stand for machines: nginx talks to ferrocorn from 127.0.0.5 (the trusted
proxy), clients reach nginx from 127.0.0.9, and a forger talks to ferrocorn directly from
127.0.0.7 with made-up X-Forwarded-* headers."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import support.nginx
from support import RawConn, Server, http_request, ipv6_available, wait_for
from support.nginx import proxy_pass
from support.skips import needs_tool

APP = "environ_app:app"
PROXY_IP = "127.0.0.5"
CLIENT_IP = "127.0.0.9"
FORGER_IP = "127.0.0.7"

FORGED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
]


def environ_from(server: Server, headers: list[tuple[str, str]], source: str,
                 path: str = "/p", host: str = "localhost") -> dict[str, Any]:
    """The app's environ for a request sent from ``source`` (a loopback address)."""
    sock = socket.create_connection((server.host, server.port), timeout=10,
                                    source_address=(source, 0))
    with RawConn(sock) as conn:
        conn.send(http_request(path, headers=headers, host=host))
        resp = conn.response()
    assert resp.status == 200, resp
    return {k: v["value"] for k, v in resp.json().items() if isinstance(v, dict) and "value" in v}


def status_from(server: Server, headers: list[tuple[str, str]], source: str) -> int:
    sock = socket.create_connection((server.host, server.port), timeout=10,
                                    source_address=(source, 0))
    with RawConn(sock) as conn:
        conn.send(http_request("/p", headers=headers))
        return conn.response().status


# ---------------------------------------------------------------------- trust, directly

def test_trusted_proxy_headers_are_applied(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", f"{PROXY_IP},10.0.0.0/8",
                          "--forwarded-headers", "all")
    env = environ_from(server, [
        ("X-Forwarded-For", "203.0.113.9, 10.1.2.3"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example:8443"),
        ("X-Forwarded-Prefix", "/shop"),
    ], PROXY_IP, path="/shop/cart")
    # Right-most untrusted hop: 10.1.2.3 is a trusted proxy too, so the client is 203.0.113.9.
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "shop.example:8443"
    assert env["SERVER_NAME"] == "shop.example" and env["SERVER_PORT"] == "8443"
    assert env["SCRIPT_NAME"] == "/shop" and env["PATH_INFO"] == "/cart"


def test_only_for_and_proto_are_applied_by_default(start_server) -> None:
    """Issue 21: a trusted proxy's Host, Port, Prefix and Forwarded headers are not applied
    unless --forwarded-headers turns them on (nginx passes a client's own copies through)."""
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    env = environ_from(server, [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "444"),
        ("X-Forwarded-Prefix", "/evil"),
        ("Forwarded", "for=6.6.6.6;host=evil.example;proto=http"),
    ], PROXY_IP, path="/evil/p", host="shop.example")
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "shop.example"
    assert env["SERVER_NAME"] == "shop.example"
    # The port the server listens on, not one a header chose.
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/evil/p"
    # What was sent is still there as plain headers, for an app that wants to judge it.
    assert env["HTTP_X_FORWARDED_HOST"] == "evil.example"


@pytest.mark.parametrize("kind, header, value, key, expected", [
    ("host", "X-Forwarded-Host", "shop.example", "HTTP_HOST", "shop.example"),
    ("port", "X-Forwarded-Port", "8443", "SERVER_PORT", "8443"),
    ("prefix", "X-Forwarded-Prefix", "/shop", "SCRIPT_NAME", "/shop"),
    ("forwarded,for", "Forwarded", "for=198.51.100.4", "REMOTE_ADDR", "198.51.100.4"),
])
def test_each_forwarded_header_is_applied_once_turned_on(start_server, kind: str, header: str,
                                                         value: str, key: str,
                                                         expected: str) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP, "--forwarded-headers", kind)
    assert environ_from(server, [(header, value)], PROXY_IP)[key] == expected


def test_left_most_address_is_never_believed(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    env = environ_from(server, [("X-Forwarded-For", "1.2.3.4, 198.51.100.7")], PROXY_IP)
    assert env["REMOTE_ADDR"] == "198.51.100.7"


def test_forger_is_not_believed(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    env = environ_from(server, FORGED, FORGER_IP)
    assert env["REMOTE_ADDR"] == FORGER_IP
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "localhost"
    assert env["SCRIPT_NAME"] == ""
    # The app still sees what was sent, as plain headers.
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"


def test_client_address_follows_each_request(start_server) -> None:
    """On one keep-alive connection from the proxy, each request's REMOTE_ADDR is its own
    client's, however they repeat and change (the server reuses the str of a repeated one)."""
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    sock = socket.create_connection((server.host, server.port), timeout=10,
                                    source_address=(PROXY_IP, 0))
    clients = ["203.0.113.1", "203.0.113.1", "2001:db8::7", None, "203.0.113.2", "203.0.113.1"]
    with RawConn(sock) as conn:
        for client in clients:
            headers = [("X-Forwarded-For", client)] if client else []
            conn.send(http_request("/p", headers=headers))
            resp = conn.response()
            assert resp.status == 200, resp
            assert resp.json()["REMOTE_ADDR"]["value"] == (client or PROXY_IP)


def test_default_trusts_only_loopback(start_server) -> None:
    server = start_server(APP)
    assert environ_from(server, FORGED, "127.0.0.1")["REMOTE_ADDR"] == "6.6.6.6"
    assert environ_from(server, FORGED, FORGER_IP)["REMOTE_ADDR"] == FORGER_IP


def test_underscore_names_never_pose_as_forwarded_headers(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    env = environ_from(server, [("X_Forwarded_For", "6.6.6.6"), ("X_Forwarded_Proto", "https")],
                       PROXY_IP)
    assert env["REMOTE_ADDR"] == PROXY_IP
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_rfc7239_forwarded(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP, "--forwarded-headers",
                          "for,proto,host,forwarded")
    env = environ_from(
        server, [("Forwarded", 'for="[2001:db8::7]:4711";proto=https;host=a.example')], PROXY_IP)
    assert env["REMOTE_ADDR"] == "2001:db8::7"
    assert env["REMOTE_PORT"] == "4711"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "a.example"


def test_secure_scheme_headers(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    assert environ_from(server, [("X-Forwarded-Ssl", "on")], PROXY_IP)["wsgi.url_scheme"] == "https"
    server2 = start_server(APP, "--forwarded-allow-ips", PROXY_IP,
                           "--secure-scheme-headers", "X-Is-Tls=yes")
    assert environ_from(server2, [("X-Is-Tls", "yes")], PROXY_IP)["wsgi.url_scheme"] == "https"
    assert environ_from(server2, [("X-Forwarded-Ssl", "on")], PROXY_IP)["wsgi.url_scheme"] == "http"


def test_custom_header_names(start_server) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP,
                          "--forwarded-host-header", "X-FHOST",
                          "--forwarded-for-header", "X-Real-Client",
                          "--forwarded-headers", "for,host")
    env = environ_from(server, [("X-FHOST", "custom.example"), ("X-Real-Client", "192.0.2.4"),
                                ("X-Forwarded-Host", "ignored.example")], PROXY_IP)
    assert env["HTTP_HOST"] == "custom.example"
    assert env["REMOTE_ADDR"] == "192.0.2.4"


def test_custom_proto_port_and_prefix_header_names(start_server) -> None:
    """--forwarded-proto-header, -port-header and -prefix-header at names of their own: those
    are read, the default names are not."""
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP,
                          "--forwarded-proto-header", "X-Scheme",
                          "--forwarded-port-header", "X-Outer-Port",
                          "--forwarded-prefix-header", "X-Mount",
                          "--forwarded-headers", "proto,port,prefix")
    env = environ_from(server, [("X-Scheme", "https"), ("X-Outer-Port", "8443"),
                                ("X-Mount", "/mnt"), *FORGED[1:]], PROXY_IP, path="/mnt/p")
    assert env["wsgi.url_scheme"] == "https"
    assert env["SERVER_PORT"] == "8443"
    assert env["SCRIPT_NAME"] == "/mnt" and env["PATH_INFO"] == "/p"
    # The default names alone are just headers now.
    env = environ_from(server, FORGED[1:], PROXY_IP, path="/evil/p")
    assert env["wsgi.url_scheme"] == "http"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/evil/p"


def test_root_path(start_server) -> None:
    server = start_server(APP, "--root-path", "/mounted")
    env = environ_from(server, [], "127.0.0.1", path="/mounted/x")
    assert env["SCRIPT_NAME"] == "/mounted" and env["PATH_INFO"] == "/x"


@pytest.mark.parametrize("headers", [
    [("X-Forwarded-For", "not-an-ip")],
    [("X-Forwarded-Proto", "gopher")],
    [("X-Forwarded-Proto", "https"), ("Forwarded", "proto=http")],
    [("X-Forwarded-For", "192.0.2.1"), ("Forwarded", "for=192.0.2.2")],
    [("X-Forwarded-Port", "port")],
], ids=["bad-for", "bad-proto", "proto-conflict", "for-conflict", "bad-port"])
def test_bad_values_from_a_trusted_proxy_get_400(start_server, headers) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP, "--forwarded-headers", "all")
    assert status_from(server, headers, PROXY_IP) == 400
    server.wait_log(r"refused request GET /p: (malformed|conflicting)")
    # The same values from an untrusted peer are just headers.
    assert status_from(server, headers, FORGER_IP) == 200


# --------------------------------------------------------------------------- PROXY protocol

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    """A PROXY v2 PROXY command for a TCP connection (IPv4 or IPv6 addresses), with TLVs."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    addrs = socket.inet_pton(family, src) + socket.inet_pton(family, dst) \
        + struct.pack("!HH", sport, dport) + tlvs
    kind = 0x21 if family == socket.AF_INET6 else 0x11  # TCP over IPv6 / IPv4
    return V2_SIGNATURE + bytes([0x21, kind]) + struct.pack("!H", len(addrs)) + addrs


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


#: A LOCAL command (the proxy's own health check): no addresses, the connection's are used.
V2_LOCAL = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


@pytest.mark.parametrize(("preamble", "addr", "port"), [
    (b"PROXY TCP4 198.51.100.22 10.0.0.1 51234 443\r\n", "198.51.100.22", "51234"),
    (v2_header("198.51.100.22", 51234, "10.0.0.1", 443), "198.51.100.22", "51234"),
    (v2_header("2001:db8::22", 51234, "2001:db8::1", 443), "2001:db8::22", "51234"),
    # PP2_TYPE_AUTHORITY, PP2_TYPE_UNIQUE_ID and a NOOP after the addresses are skipped.
    (v2_header("198.51.100.23", 40000, "10.0.0.1", 443,
               tlv(0x02, b"app.example") + tlv(0x05, b"id-7") + tlv(0x04, b"\0" * 9)),
     "198.51.100.23", "40000"),
    (V2_LOCAL, PROXY_IP, None),
], ids=["v1", "v2", "v2-ipv6", "v2-tlvs", "v2-local"])
def test_proxy_protocol_from_trusted_peer(start_server, preamble: bytes, addr: str,
                                          port: str | None) -> None:
    server = start_server(APP, "--proxy-protocol", "--forwarded-allow-ips", PROXY_IP)
    sock = socket.create_connection((server.host, server.port), timeout=10,
                                    source_address=(PROXY_IP, 0))
    with RawConn(sock) as conn:
        conn.send(preamble + http_request("/p"))
        resp = conn.response()
        assert resp.status == 200
        env = resp.json()
        assert env["REMOTE_ADDR"]["value"] == addr
        # LOCAL: the connection's own port.
        expected_port = port or str(sock.getsockname()[1])
        assert env["REMOTE_PORT"]["value"] == expected_port
        # The preamble comes once; the next request on the connection is plain HTTP.
        conn.send(http_request("/p"))
        assert conn.response().status == 200


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_proxy_protocol_v2_from_a_proxy_on_ipv6(start_server) -> None:
    """The proxy itself on IPv6 (::1, trusted): its v2 header's client is used; its LOCAL
    health check is its own address."""
    server = start_server(APP, "--proxy-protocol", "--forwarded-allow-ips", "::1",
                          binds=["[::1]:0"])
    for preamble, addr in ((v2_header("2001:db8::9", 1234, "2001:db8::1", 443), "2001:db8::9"),
                           (V2_LOCAL, "::1")):
        with RawConn.tcp("::1", server.port) as conn:
            conn.send(preamble + http_request("/p"))
            resp = conn.response()
        assert resp.status == 200, resp
        assert resp.json()["REMOTE_ADDR"]["value"] == addr


@pytest.mark.parametrize(("source", "data"), [
    (FORGER_IP, b"PROXY TCP4 198.51.100.22 10.0.0.1 51234 443\r\n"),
    (PROXY_IP, b"PROXY TCP4 nonsense\r\n"),
    (PROXY_IP, b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"),
    (PROXY_IP, V2_SIGNATURE + b"\x21\x11\xff\xff"),
], ids=["untrusted-peer", "malformed-v1", "missing", "truncated-v2"])
def test_proxy_protocol_refusals_close_the_connection(start_server, source: str,
                                                       data: bytes) -> None:
    server = start_server(APP, "--proxy-protocol", "--forwarded-allow-ips", PROXY_IP,
                          "--header-timeout", "2")
    sock = socket.create_connection((server.host, server.port), timeout=10,
                                    source_address=(source, 0))
    with RawConn(sock) as conn:
        conn.send(data + http_request("/p"))
        rest = conn.read_until_close(timeout=5)
        assert b"HTTP/1.1 200" not in rest


# ------------------------------------------------------------------------------ real nginx

needs_nginx = needs_tool("nginx")


class Nginx(support.nginx.Nginx):
    """nginx proxy_passing to the upstream ``backend`` that ``servers`` declares, as the
    README's config does, from the address PROXY_IP (not over a unix socket: it has none)."""

    def __init__(self, tmp: Path, servers: str, unix: bool = False, extra: str = "") -> None:
        # nginx talks to a TCP upstream from the proxy's own address; a unix socket has none.
        bind = "" if unix else f"proxy_bind {PROXY_IP};"
        super().__init__(tmp / "nginx", lambda port: f"""
            access_log off;
            {servers}
            server {{
                listen 127.0.0.1:{port};
                listen {CLIENT_IP}:{port};
                location / {{
                    {proxy_pass("backend", extra)}
                    {bind}
                    proxy_next_upstream error timeout http_502 http_503 non_idempotent;
                    proxy_connect_timeout 2s;
                }}
            }}
        """)

    def get(self, path: str = "/p", headers: list[tuple[str, str]] | None = None,
            source: str = CLIENT_IP) -> tuple[int, bytes]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                        source_address=(source, 0))
        with RawConn(sock) as conn:
            conn.send(http_request(path, host="app.example", headers=headers or []))
            resp = conn.response()
        return resp.status, resp.body


@pytest.fixture
def nginx_factory(tmp_path: Path):
    with contextlib.ExitStack() as stack:
        yield lambda upstream, extra="": stack.enter_context(Nginx(
            tmp_path, f"upstream backend {{ {upstream} keepalive 8; }}",
            unix="unix:" in upstream, extra=extra))


def env_of(body: bytes) -> dict[str, Any]:
    return {k: v["value"] for k, v in json.loads(body).items()
            if isinstance(v, dict) and "value" in v}


@needs_nginx
def test_behind_nginx_over_tcp(start_server, nginx_factory) -> None:
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    nginx = nginx_factory(f"server 127.0.0.1:{server.port};")
    status, body = nginx.get(headers=[("X-Forwarded-For", "6.6.6.6")])
    assert status == 200
    env = env_of(body)
    # nginx appends the client's own address; the right-most untrusted one is the client.
    assert env["REMOTE_ADDR"] == CLIENT_IP
    assert env["HTTP_HOST"] == "app.example"
    assert env["wsgi.url_scheme"] == "http"
    # The same forged header sent straight to ferrocorn from another machine: ignored.
    direct = environ_from(server, FORGED, FORGER_IP)
    assert direct["REMOTE_ADDR"] == FORGER_IP and direct["wsgi.url_scheme"] == "http"


#: What a client sends through nginx to pose as someone else (issue 21).
SPOOFED = [
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "444"),
    ("X-Forwarded-Prefix", "/evil"),
    ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-For", "6.6.6.6"),
]

#: The lines docs/deploy-nginx.md gives for each header --forwarded-headers can turn on: each
#: overwrites (or, with "", removes) whatever the client sent under that name.
OVERWRITE_LINES = {
    "host": "proxy_set_header X-Forwarded-Host $host;",
    "port": "proxy_set_header X-Forwarded-Port $server_port;",
    "prefix": 'proxy_set_header X-Forwarded-Prefix "";',
    "forwarded": 'proxy_set_header Forwarded "for=\\"$remote_addr\\";proto=$scheme;host=$host";',
}


@needs_nginx
def test_spoofed_forwarded_headers_through_the_documented_nginx_config(start_server,
                                                                      nginx_factory) -> None:
    """With the README's nginx config and the defaults, a client's own X-Forwarded-Host, -Port,
    -Prefix and Forwarded headers (which nginx passes on) change nothing."""
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP)
    nginx = nginx_factory(f"server 127.0.0.1:{server.port};")
    status, body = nginx.get("/evil/p", headers=SPOOFED)
    assert status == 200
    env = env_of(body)
    assert env["REMOTE_ADDR"] == CLIENT_IP
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "app.example" and env["SERVER_NAME"] == "app.example"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/evil/p"


@needs_nginx
@pytest.mark.parametrize("kind", sorted(OVERWRITE_LINES))
def test_each_opt_in_header_with_its_documented_nginx_line(start_server, nginx_factory,
                                                           kind: str) -> None:
    """Turned on with --forwarded-headers and overwritten by nginx as docs/deploy-nginx.md
    says, each header carries nginx's real value, never the client's."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "deploy-nginx.md").read_text()
    line = OVERWRITE_LINES[kind]
    assert line in doc, f"docs/deploy-nginx.md no longer shows {line!r}"
    server = start_server(APP, "--forwarded-allow-ips", PROXY_IP,
                          "--forwarded-headers", f"for,proto,{kind}")
    nginx = nginx_factory(f"server 127.0.0.1:{server.port};", extra=line)
    status, body = nginx.get("/evil/p", headers=SPOOFED)
    assert status == 200, body
    env = env_of(body)
    assert env["REMOTE_ADDR"] == CLIENT_IP
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "app.example"
    expected_port = str(nginx.port) if kind == "port" else str(server.port)
    assert env["SERVER_PORT"] == expected_port
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/evil/p"


@needs_nginx
def test_behind_nginx_over_a_unix_socket(start_server, nginx_factory, tmp_path: Path) -> None:
    sock_path = tmp_path / "app.sock"
    server = start_server(APP, binds=[f"unix:{sock_path}"])
    nginx = nginx_factory(f"server unix:{sock_path};")
    status, body = nginx.get()
    assert status == 200
    env = env_of(body)
    assert env["REMOTE_ADDR"] == CLIENT_IP  # unix-socket peers are trusted
    assert env["HTTP_HOST"] == "app.example"
    assert server.running()


@needs_nginx
def test_nginx_upstream_survives_one_instance_stopping(start_server, nginx_factory) -> None:
    a = start_server("hostile_app:app", "--forwarded-allow-ips", PROXY_IP)
    b = start_server("hostile_app:app", "--forwarded-allow-ips", PROXY_IP)
    nginx = nginx_factory(f"server 127.0.0.1:{a.port} max_fails=1 fail_timeout=30s; "
                          f"server 127.0.0.1:{b.port} max_fails=1 fail_timeout=30s;")
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and served[0] < 2000 and time.monotonic() < deadline:
            try:
                status, _ = nginx.get("/hello")
                if status == 200:
                    served[0] += 1
                else:
                    failures.append(f"status {status}")
            except OSError as e:
                failures.append(repr(e))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_for(lambda: served[0] > 100, message="traffic through nginx")
        a.signal(signal.SIGTERM)
        assert a.wait_exit() == 0
        before = served[0]
        wait_for(lambda: served[0] > before + 200, message="traffic after one instance stopped")
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert b.running()
