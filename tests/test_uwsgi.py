"""The uwsgi protocol (``--protocol uwsgi``): raw packets (good, malformed, over the limits,
from a peer not allowed), and a real nginx with ``uwsgi_pass`` over TCP and a unix socket
whose environ matches ``proxy_pass``'s apart from the differences docs/uwsgi.md lists.

Loopback addresses stand for machines, as in test_proxy.py: nginx talks to ferrocorn from
127.0.0.5, clients reach nginx from 127.0.0.9, a stranger talks to ferrocorn from 127.0.0.7.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

import support.nginx
from support import RawConn, Server, http_request, parse_responses
from support.nginx import proxy_pass
from support.skips import needs_tool

ENV_APP = "environ_app:app"
ECHO_APP = "echo:app"
PROXY_IP = "127.0.0.5"
CLIENT_IP = "127.0.0.9"
STRANGER_IP = "127.0.0.7"
needs_nginx = needs_tool("nginx")

#: nginx's stock uwsgi_params (as nginx ships it; Debian adds ``HTTP_HOST $host``).
UWSGI_PARAMS = """
    uwsgi_param QUERY_STRING $query_string;
    uwsgi_param REQUEST_METHOD $request_method;
    uwsgi_param CONTENT_TYPE $content_type;
    uwsgi_param CONTENT_LENGTH $content_length;
    uwsgi_param REQUEST_URI $request_uri;
    uwsgi_param PATH_INFO $document_uri;
    uwsgi_param DOCUMENT_ROOT $document_root;
    uwsgi_param SERVER_PROTOCOL $server_protocol;
    uwsgi_param REQUEST_SCHEME $scheme;
    uwsgi_param HTTPS $https if_not_empty;
    uwsgi_param REMOTE_ADDR $remote_addr;
    uwsgi_param REMOTE_PORT $remote_port;
    uwsgi_param SERVER_PORT $server_port;
    uwsgi_param SERVER_NAME $server_name;
"""


def packet(variables: list[tuple[str, str | bytes]], modifier1: int = 0) -> bytes:
    """A uwsgi request packet, as nginx's uwsgi module writes one."""
    block = b""
    for name, value in variables:
        for s in (name.encode("latin-1"),
                  value if isinstance(value, bytes) else value.encode("latin-1")):
            block += struct.pack("<H", len(s)) + s
    return struct.pack("<BHB", modifier1, len(block), 0) + block


def request_vars(path: str = "/p", query: str = "", method: str = "GET", body: bytes = b"",
                 extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str | bytes]]:
    uri = path + ("?" + query if query else "")
    out: list[tuple[str, str | bytes]] = [
        ("QUERY_STRING", query), ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", "text/plain" if body else ""),
        ("CONTENT_LENGTH", str(len(body)) if body else ""),
        ("REQUEST_URI", uri), ("PATH_INFO", unquote(path)), ("DOCUMENT_ROOT", "/srv/www"),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "203.0.113.7"), ("REMOTE_PORT", "40000"),
        ("SERVER_PORT", "8443"), ("SERVER_NAME", "app.example"),
        ("HTTP_HOST", "app.example:8443"), ("HTTP_USER_AGENT", "test"),
    ]
    names = {n for n, _ in extra or []}
    return [(n, v) for n, v in out if n not in names] + list(extra or [])


def connect(server: Server, source: str | None = None) -> RawConn:
    if source is None:
        return server.connect()
    sock = socket.create_connection((server.host, server.port), timeout=10,
                                    source_address=(source, 0))
    return RawConn(sock)


def send_packet(server: Server, data: bytes, source: str | None = None) -> bytes:
    """Sends raw bytes; returns everything the server wrote before it closed."""
    with connect(server, source) as conn:
        conn.send(data)
        return conn.read_until_close()


def one_response(data: bytes) -> Any:
    (resp,) = parse_responses(data)
    return resp


def env_values(body: bytes) -> dict[str, Any]:
    """environ_app's JSON: the keys whose values are plain data (not object reprs)."""
    data = json.loads(body)
    out = {k: v["value"] for k, v in data.items()
           if isinstance(v, dict) and v.get("type") in ("str", "bool", "int", "list")}
    out["body"] = data["body"]
    return out


# ------------------------------------------------------------------------------ raw packets


def test_a_packet_is_served_as_an_http_request(start_server) -> None:
    server = start_server(ENV_APP, "--protocol", "uwsgi")
    data = send_packet(server, packet(request_vars("/a%20b/c", "x=1&y=%2F",
                                                   extra=[("HTTPS", "on"),
                                                          ("MY_SETTING", "42")])))
    resp = one_response(data)  # and then the connection closed
    assert resp.version == "HTTP/1.1" and resp.status == 200
    assert resp.header("Connection") == "close" and resp.header("Transfer-Encoding") is None
    env = env_values(resp.body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/a b/c" and env["RAW_URI"] == "/a%20b/c?x=1&y=%2F"
    assert env["QUERY_STRING"] == "x=1&y=%2F"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["REMOTE_PORT"] == "40000"
    assert env["HTTP_HOST"] == "app.example:8443" and env["HTTP_USER_AGENT"] == "test"
    assert env["SERVER_NAME"] == "app.example" and env["SERVER_PORT"] == "8443"
    assert env["wsgi.url_scheme"] == "https"
    # The front end's other variables pass through, as uWSGI passes them.
    assert env["DOCUMENT_ROOT"] == "/srv/www" and env["MY_SETTING"] == "42"
    assert env["REQUEST_URI"] == "/a%20b/c?x=1&y=%2F" and env["HTTPS"] == "on"
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert "Speaking the uwsgi protocol" in server.log


def test_http10_and_script_name(start_server) -> None:
    server = start_server(ENV_APP, "--protocol", "uwsgi")
    data = send_packet(server, packet(request_vars(
        "/x", extra=[("SERVER_PROTOCOL", "HTTP/1.0"), ("SCRIPT_NAME", "/app"),
                     ("REQUEST_URI", "/app/x")])))
    resp = one_response(data)
    assert resp.version == "HTTP/1.0" and resp.status == 200
    env = env_values(resp.body)
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/x"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    # nginx's `uwsgi_modifier1 30`: PATH_INFO still holds SCRIPT_NAME.
    data = send_packet(server, packet(request_vars(
        "/app/x", extra=[("SCRIPT_NAME", "/app")]), modifier1=30))
    env = env_values(one_response(data).body)
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/x"


def test_a_body_streams_in_pieces(start_server) -> None:
    server = start_server(ECHO_APP, "--protocol", "uwsgi")
    body = bytes(range(256)) * 8192  # 2 MiB
    with server.connect() as conn:
        conn.send(packet(request_vars("/", "mode=hash", method="POST", body=body)))
        for i in range(0, len(body), 256 * 1024):
            conn.send(body[i:i + 256 * 1024])
        resp = one_response(conn.read_until_close())
    reply = resp.json()
    assert reply["length"] == len(body)
    assert reply["sha256"] == hashlib.sha256(body).hexdigest()
    assert reply["largest"] <= 65536  # read as the app asked, never whole


def test_an_unread_body_and_a_response_without_length(start_server) -> None:
    server = start_server(ECHO_APP, "--protocol", "uwsgi")
    body = b"x" * 300_000
    data = send_packet(server, packet(request_vars("/", "mode=noread", method="POST",
                                                   body=body)) + body)
    assert one_response(data).status == 200
    # A streamed response without Content-Length ends with the connection, never chunked.
    hints = start_server("hints_app:app", "--protocol", "uwsgi")
    resp = one_response(send_packet(hints, packet(request_vars("/late"))))
    assert resp.close_delimited and not resp.chunked and resp.body == b"first second"
    # Early hints are not sent back through a front end.
    data = send_packet(hints, packet(request_vars("/two")))
    assert data.startswith(b"HTTP/1.1 200 "), data[:80]


MALFORMED = {
    "http_to_a_uwsgi_listener": http_request("/"),
    "unknown_modifier": packet(request_vars(), modifier1=5),
    "modifier2": packet(request_vars())[:3] + b"\x01" + packet(request_vars())[4:],
    "value_past_the_block": struct.pack("<BHB", 0, 9, 0) + b"\x01\x00A\x09\x00abcd",
    "no_method": packet([(n, v) for n, v in request_vars() if n != "REQUEST_METHOD"]),
    "crlf_in_a_header": packet(request_vars(extra=[("HTTP_X_A", "a\r\nSet-Cookie: x=1")])),
    "bad_content_length": packet(request_vars(extra=[("CONTENT_LENGTH", "12abc")])),
    "relative_uri": packet(request_vars(extra=[("REQUEST_URI", "p"), ("PATH_INFO", "p")])),
    "empty_name": struct.pack("<BHB", 0, 5, 0) + b"\x00\x00\x01\x00x",
}


def _byte_after_the_last_var() -> bytes:
    good = packet(request_vars())
    size = struct.unpack("<H", good[1:3])[0] + 1
    return struct.pack("<BHB", 0, size, 0) + good[4:] + b"\x07"


MALFORMED["byte_after_the_last_var"] = _byte_after_the_last_var()


def test_malformed_packets_are_closed_with_a_debug_line(start_server) -> None:
    server = start_server(ENV_APP, "--protocol", "uwsgi", "--log-level", "debug")
    for name, data in MALFORMED.items():
        mark = server.mark()
        assert send_packet(server, data) == b"", name
        server.wait_log(r"uwsgi|closing", since=mark)
    # A packet cut short by the peer, and one that never finishes (--header-timeout).
    with server.connect() as conn:
        conn.send(packet(request_vars())[:20])
        conn.sock.shutdown(socket.SHUT_WR)
        conn.assert_closed()
    slow = start_server(ENV_APP, "--protocol", "uwsgi", "--header-timeout", "1")
    with slow.connect() as conn:
        conn.send(packet(request_vars())[:10])
        conn.assert_closed(timeout=5)
    resp = one_response(send_packet(server, packet(request_vars())))
    assert resp.status == 200  # everyone else is still served


def test_oversized_requests(start_server) -> None:
    server = start_server(ENV_APP, "--protocol", "uwsgi")
    # The largest vars block the header can announce (64 KiB) is read whole; a header field
    # in it over --limit-request-field_size gets 431, as over HTTP.
    block = len(packet(request_vars())) - 4
    filler = "v" * (65535 - block - (2 + len("HTTP_X_BIG") + 2))
    big = packet(request_vars(extra=[("HTTP_X_BIG", filler)]))
    assert struct.unpack("<H", big[1:3])[0] == 65535
    resp = one_response(send_packet(server, big))
    assert resp.status == 431
    long_path = "/" + "a" * 5000
    resp = one_response(send_packet(server, packet(request_vars(long_path))))
    assert resp.status == 414
    many = [(f"HTTP_X_{i}", "v") for i in range(120)]
    resp = one_response(send_packet(server, packet(request_vars(extra=many))))
    assert resp.status == 431
    # A body over --limit-request-body.
    limited = start_server(ENV_APP, "--protocol", "uwsgi", "--limit-request-body", "100")
    data = send_packet(limited, packet(request_vars(method="POST", body=b"x" * 101))
                       + b"x" * 101)
    assert one_response(data).status == 413
    # A larger field limit lets the big packet through.
    roomy = start_server(ENV_APP, "--protocol", "uwsgi", "--limit-request-field_size", "70000")
    resp = one_response(send_packet(roomy, big))
    assert resp.status == 200 and len(env_values(resp.body)["HTTP_X_BIG"]) == len(filler)


def test_only_allowed_peers_may_send_packets(start_server, tmp_path: Path) -> None:
    server = start_server(ENV_APP, "--protocol", "uwsgi", "--uwsgi-allow-from", PROXY_IP,
                          "--log-level", "debug")
    mark = server.mark()
    assert send_packet(server, packet(request_vars()), source=STRANGER_IP) == b""
    server.wait_log(r"not in --uwsgi-allow-from", since=mark)
    resp = one_response(send_packet(server, packet(request_vars()), source=PROXY_IP))
    assert env_values(resp.body)["REMOTE_ADDR"] == "203.0.113.7"  # the proxy's word
    # The default allows loopback only; a unix-socket peer is always allowed.
    default = start_server(ENV_APP, "--protocol", "uwsgi")
    assert send_packet(default, packet(request_vars()), source=STRANGER_IP) == b""
    assert one_response(send_packet(default, packet(request_vars()))).status == 200
    sock = tmp_path / "u.sock"
    unix = start_server(ENV_APP, "--protocol", "uwsgi", "--uwsgi-allow-from", PROXY_IP,
                        binds=[f"unix:{sock}"])
    resp = one_response(send_packet(unix, packet(request_vars())))
    assert env_values(resp.body)["REMOTE_ADDR"] == "203.0.113.7"


# ------------------------------------------------------------------------------ real nginx


class Nginx(support.nginx.Nginx):
    """nginx with two front doors to the same app: ``uwsgi_port`` passes requests with
    ``uwsgi_pass``, ``http_port`` with ``proxy_pass`` (as test_proxy.py sets it up), for
    comparing what the app sees."""

    def __init__(self, tmp: Path, uwsgi_upstream: str, http_upstream: str | None) -> None:
        bind = "" if uwsgi_upstream.startswith("unix:") else f"uwsgi_bind {PROXY_IP};"

        def http(uwsgi_port: int, http_port: int = 0) -> str:
            http_server = "" if http_upstream is None else f"""
                server {{
                    listen {CLIENT_IP}:{http_port};
                    location / {{
                        {proxy_pass(http_upstream)}
                        proxy_bind {PROXY_IP};
                    }}
                }}"""
            return f"""
                access_log off;
                client_max_body_size 64m;
                server {{
                    listen {CLIENT_IP}:{uwsgi_port};
                    location / {{
                        {UWSGI_PARAMS}
                        uwsgi_pass {uwsgi_upstream};
                        {bind}
                    }}
                    location /mounted/ {{
                        {UWSGI_PARAMS}
                        uwsgi_param SCRIPT_NAME /mounted;
                        uwsgi_modifier1 30;
                        uwsgi_pass {uwsgi_upstream};
                        {bind}
                    }}
                }}
                {http_server}"""

        super().__init__(tmp / "nginx", http, ports=1 if http_upstream is None else 2)
        #: nginx's uwsgi_pass front door, and its proxy_pass one (0: none).
        self.uwsgi_port = self.ports[0]
        self.http_port = self.ports[1] if http_upstream is not None else 0

    def request(self, port: int, path: str, method: str = "GET", body: bytes = b"",
                headers: list[tuple[str, str]] | None = None) -> Any:
        sock = socket.create_connection((CLIENT_IP, port), timeout=20,
                                        source_address=(CLIENT_IP, 0))
        with RawConn(sock, timeout=20) as conn:
            conn.send(http_request(path, method=method, host="app.example",
                                   headers=headers or [], body=body))
            return conn.response(method)


@pytest.fixture
def nginx_factory(tmp_path: Path):
    with contextlib.ExitStack() as stack:
        yield lambda uwsgi_upstream, http_upstream=None: stack.enter_context(
            Nginx(tmp_path, uwsgi_upstream, http_upstream))


#: Where uwsgi_pass's environ differs from proxy_pass's (docs/uwsgi.md, "Differences").
ONLY_UWSGI = {"REQUEST_URI", "DOCUMENT_ROOT", "REQUEST_SCHEME", "REMOTE_PORT"}
ONLY_PROXY = {"HTTP_X_REAL_IP", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO"}
DIFFERENT = {"SERVER_PORT"}  # nginx's own port over uwsgi; ferrocorn's over HTTP


def compare_environs(nginx: Nginx, http: Server, path: str, **kw: Any) -> dict[str, Any]:
    via_uwsgi = nginx.request(nginx.uwsgi_port, path, **kw)
    via_http = nginx.request(nginx.http_port, path, **kw)
    assert via_uwsgi.status == via_http.status == 200, (via_uwsgi, via_http)
    u, h = env_values(via_uwsgi.body), env_values(via_http.body)
    assert set(u) - set(h) == ONLY_UWSGI
    assert set(h) - set(u) == ONLY_PROXY
    differing = {k for k in set(u) & set(h) if u[k] != h[k]}
    assert differing == DIFFERENT, {k: (u[k], h[k]) for k in differing}
    assert u["SERVER_PORT"] == str(nginx.uwsgi_port) and h["SERVER_PORT"] == str(http.port)
    assert u["REMOTE_PORT"].isdigit()
    return u


@needs_nginx
def test_uwsgi_pass_over_tcp_matches_proxy_pass(start_server, nginx_factory) -> None:
    server = start_server(ENV_APP, "--protocol", "uwsgi", "--uwsgi-allow-from", PROXY_IP)
    http = start_server(ENV_APP, "--forwarded-allow-ips", PROXY_IP)
    nginx = nginx_factory(f"127.0.0.1:{server.port}", f"127.0.0.1:{http.port}")
    env = compare_environs(nginx, http, "/p/a%20b?x=1&y=%2F")
    assert env["PATH_INFO"] == "/p/a b" and env["RAW_URI"] == "/p/a%20b?x=1&y=%2F"
    assert env["REMOTE_ADDR"] == CLIENT_IP and env["HTTP_HOST"] == "app.example"
    env = compare_environs(nginx, http, "/form", method="POST", body=b"a=1&b=2",
                           headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert env["body"] == "a=1&b=2" and env["CONTENT_LENGTH"] == "7"
    # A forged X-Forwarded-For from the client is a header like any other over uwsgi: the
    # client's address is what nginx says it is.
    resp = nginx.request(nginx.uwsgi_port, "/p", headers=[("X-Forwarded-For", "6.6.6.6")])
    env = env_values(resp.body)
    assert env["REMOTE_ADDR"] == CLIENT_IP and env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"
    # Mounted under a prefix with `uwsgi_modifier1 30`.
    env = env_values(nginx.request(nginx.uwsgi_port, "/mounted/x?q=1").body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/mounted", "/x", "q=1")


@needs_nginx
def test_uwsgi_pass_over_a_unix_socket(start_server, nginx_factory, tmp_path: Path) -> None:
    sock = tmp_path / "app.sock"
    # Unix-socket peers are allowed whatever --uwsgi-allow-from says.
    start_server(ENV_APP, "--protocol", "uwsgi", "--uwsgi-allow-from", "192.0.2.1",
                 binds=[f"unix:{sock}"])
    http = start_server(ENV_APP, "--forwarded-allow-ips", PROXY_IP)
    nginx = nginx_factory(f"unix:{sock}", f"127.0.0.1:{http.port}")
    env = compare_environs(nginx, http, "/u?z=9")
    assert env["REMOTE_ADDR"] == CLIENT_IP and env["QUERY_STRING"] == "z=9"


@needs_nginx
def test_bodies_stream_both_ways_through_nginx(start_server, nginx_factory) -> None:
    server = start_server(ECHO_APP, "--protocol", "uwsgi", "--uwsgi-allow-from", PROXY_IP)
    nginx = nginx_factory(f"127.0.0.1:{server.port}")
    body = bytes(range(256)) * 16384  # 4 MiB
    resp = nginx.request(nginx.uwsgi_port, "/?mode=hash", method="POST", body=body)
    assert resp.status == 200, (resp, nginx.error_log()[-2000:])
    reply = resp.json()
    assert reply["length"] == len(body) and reply["sha256"] == hashlib.sha256(body).hexdigest()
    # A body the app never reads, then a streamed response without Content-Length.
    resp = nginx.request(nginx.uwsgi_port, "/?mode=noread", method="POST", body=body)
    assert resp.status == 200, (resp, nginx.error_log()[-2000:])
    hints = start_server("hints_app:app", "--protocol", "uwsgi", "--uwsgi-allow-from", PROXY_IP)
    nginx2 = nginx_factory(f"127.0.0.1:{hints.port}")
    resp = nginx2.request(nginx2.uwsgi_port, "/late")
    assert resp.status == 200 and resp.body == b"first second"
    # The app's early hints stop at the front end; the response is whole.
    resp = nginx2.request(nginx2.uwsgi_port, "/two")
    assert resp.status == 200 and resp.body
    assert "upstream prematurely closed" not in nginx.error_log() + nginx2.error_log()
