"""PEP 3333's environ: every required key, with the right types and values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from support import Server, http_request, running_server
from support.server import UnixHTTPConnection


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("environ_app:app") as srv:
        yield srv


def environ_for(server: Server, raw: bytes) -> tuple[dict[str, Any], int]:
    """Send one raw request; return the app's description of the environ and our port."""
    with server.connect() as conn:
        conn.send(raw)
        resp = conn.response()
        local_port = conn.sock.getsockname()[1]
    assert resp.status == 200, resp
    return resp.json(), local_port


def value(env: dict[str, Any], key: str) -> Any:
    assert key in env, f"{key} missing from environ: {sorted(env)}"
    return env[key]["value"]


CGI_KEYS = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
            "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "RAW_URI"]


def test_required_keys_and_types(server: Server) -> None:
    env, local_port = environ_for(server, http_request("/path?x=1"))
    for key in CGI_KEYS:
        assert env[key]["type"] == "str", (key, env[key])
    # Every key without a dot (CGI variables, HTTP_*) is a native str.
    for key, entry in env.items():
        if "." not in key and key != "body":
            assert entry["type"] == "str", (key, entry)
    assert env["wsgi.version"] == {"type": "tuple", "value": [1, 0]}
    assert env["wsgi.url_scheme"] == {"type": "str", "value": "http"}
    assert env["wsgi.multithread"] == {"type": "bool", "value": True}
    assert env["wsgi.multiprocess"]["type"] == "bool"
    assert env["wsgi.run_once"] == {"type": "bool", "value": False}
    assert env["wsgi.input"]["methods"] == ["read", "readline", "readlines", "__iter__"]
    assert env["wsgi.errors"]["methods"] == ["write", "writelines", "flush"]
    assert env["wsgi.file_wrapper"]["callable"] is True


def test_basic_values(server: Server) -> None:
    env, local_port = environ_for(server, http_request("/some/path?x=1&y=2"))
    assert value(env, "REQUEST_METHOD") == "GET"
    assert value(env, "SCRIPT_NAME") == ""
    assert value(env, "PATH_INFO") == "/some/path"
    assert value(env, "QUERY_STRING") == "x=1&y=2"
    assert value(env, "RAW_URI") == "/some/path?x=1&y=2"
    assert value(env, "SERVER_PROTOCOL") == "HTTP/1.1"
    assert value(env, "REMOTE_ADDR") == "127.0.0.1"
    assert value(env, "REMOTE_PORT") == str(local_port)
    assert value(env, "HTTP_HOST") == "localhost"
    assert value(env, "SERVER_NAME")
    assert re.fullmatch(r"\d+", value(env, "SERVER_PORT"))


def test_server_name_and_port_without_host(server: Server) -> None:
    env, _ = environ_for(server, b"GET / HTTP/1.0\r\n\r\n")
    assert value(env, "SERVER_PROTOCOL") == "HTTP/1.0"
    assert value(env, "SERVER_NAME") == "127.0.0.1"
    assert value(env, "SERVER_PORT") == str(server.port)
    assert "HTTP_HOST" not in env


def test_server_name_and_port_follow_host(server: Server) -> None:
    env, _ = environ_for(server, http_request("/", host=f"127.0.0.1:{server.port}"))
    assert value(env, "SERVER_NAME") == "127.0.0.1"
    assert value(env, "SERVER_PORT") == str(server.port)


@pytest.mark.parametrize(("target", "path"), [
    ("/caf%C3%A9", "/caf\u00c3\u00a9"),  # UTF-8 bytes, each decoded as latin-1
    ("/%E9", "/\u00e9"),
    ("/a%20b", "/a b"),
    ("/a%2Fb", "/a/b"),
    ("/plain/path/", "/plain/path/"),
    ("/%41%42c", "/ABc"),
    ("/100%25", "/100%"),
], ids=["utf8-as-latin1", "latin1-byte", "space", "slash", "plain", "letters", "percent"])
def test_path_info_is_percent_decoded_latin1(server: Server, target: str, path: str) -> None:
    env, _ = environ_for(server, http_request(target + "?q=%C3%A9"))
    assert value(env, "PATH_INFO") == path
    assert value(env, "RAW_URI") == target + "?q=%C3%A9"
    assert value(env, "QUERY_STRING") == "q=%C3%A9"


@pytest.mark.parametrize("query", ["a=%20b&c=d+e", "x", "a=1&a=2", "%ZZ", "=&&=", "a=/b?c"])
def test_query_string_is_raw(server: Server, query: str) -> None:
    env, _ = environ_for(server, http_request("/q?" + query))
    assert value(env, "QUERY_STRING") == query
    assert value(env, "PATH_INFO") == "/q"


def test_query_string_empty_without_question_mark(server: Server) -> None:
    env, _ = environ_for(server, http_request("/noquery"))
    assert env.get("QUERY_STRING", {"value": ""})["value"] == ""


def test_content_type_and_length_absent_when_not_sent(server: Server) -> None:
    env, _ = environ_for(server, http_request("/"))
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        assert key not in env or env[key]["value"] == "", (key, env.get(key))
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_content_type_and_length_when_sent(server: Server) -> None:
    raw = http_request("/", method="POST", body=b"0123456789",
                       headers=[("Content-Type", "text/plain; charset=latin-1")])
    env, _ = environ_for(server, raw)
    assert value(env, "CONTENT_TYPE") == "text/plain; charset=latin-1"
    assert value(env, "CONTENT_LENGTH") == "10"
    assert value(env, "REQUEST_METHOD") == "POST"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["body"] == "0123456789"


def test_http_headers_become_http_keys(server: Server) -> None:
    raw = http_request("/", headers=[("X-Custom-Thing", "v1"), ("accept", "text/html"),
                                     ("X-Empty", ""), ("X-Spaces", "  padded value  ")])
    env, _ = environ_for(server, raw)
    assert value(env, "HTTP_X_CUSTOM_THING") == "v1"
    assert value(env, "HTTP_ACCEPT") == "text/html"
    assert value(env, "HTTP_X_EMPTY") == ""
    assert value(env, "HTTP_X_SPACES") == "padded value"  # OWS is not part of the value


def test_repeated_headers_are_joined_with_commas(server: Server) -> None:
    raw = http_request("/", headers=[("X-Multi", "a"), ("X-Other", "o"), ("X-Multi", "b"),
                                     ("x-multi", "c")])
    env, _ = environ_for(server, raw)
    assert re.fullmatch(r"a, ?b, ?c", value(env, "HTTP_X_MULTI")), env["HTTP_X_MULTI"]
    assert value(env, "HTTP_X_OTHER") == "o"


def test_latin1_header_values(server: Server) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9 \xff\r\n\r\n"
    env, _ = environ_for(server, raw)
    assert value(env, "HTTP_X_LATIN") == "caf\u00e9 \u00ff"


def test_underscore_header_dropped(server: Server) -> None:
    raw = http_request("/", headers=[("X_Forwarded_For", "6.6.6.6"), ("Foo_Bar", "x")])
    env, _ = environ_for(server, raw)
    assert "HTTP_X_FORWARDED_FOR" not in env, env.get("HTTP_X_FORWARDED_FOR")
    assert "HTTP_FOO_BAR" not in env
    assert not any("6.6.6.6" in str(entry.get("value")) for entry in env.values()
                   if isinstance(entry, dict))


def test_underscore_header_cannot_impersonate_dash_header(server: Server) -> None:
    for order in ([("X-Forwarded-For", "1.2.3.4"), ("X_Forwarded_For", "6.6.6.6")],
                  [("X_Forwarded_For", "6.6.6.6"), ("X-Forwarded-For", "1.2.3.4")]):
        env, _ = environ_for(server, http_request("/", headers=order))
        assert value(env, "HTTP_X_FORWARDED_FOR") == "1.2.3.4"


def test_request_methods(server: Server) -> None:
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"):
        env, _ = environ_for(server, http_request("/m", method=method))
        assert value(env, "REQUEST_METHOD") == method


def test_absolute_form_target(server: Server) -> None:
    env, _ = environ_for(server, b"GET http://example.com/abs/p%20q?z=9 HTTP/1.1\r\n"
                                 b"Host: example.com\r\n\r\n")
    assert value(env, "PATH_INFO") == "/abs/p q"
    assert value(env, "QUERY_STRING") == "z=9"


def test_chunked_request_has_no_content_length(server: Server) -> None:
    raw = (b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\n\r\n")
    env, _ = environ_for(server, raw)
    assert env["body"] == "hello"
    assert env.get("CONTENT_LENGTH", {"value": ""})["value"] == ""


def test_environ_is_fresh_per_request(server: Server) -> None:
    """Keys of one request never leak into the next one on the same connection."""
    with server.connect() as conn:
        conn.send(http_request("/one?a=1", headers=[("X-Only-First", "1")]))
        first = conn.response().json()
        conn.send(http_request("/two"))
        second = conn.response().json()
    assert first["HTTP_X_ONLY_FIRST"]["value"] == "1"
    assert "HTTP_X_ONLY_FIRST" not in second
    assert second["PATH_INFO"]["value"] == "/two"
    assert second.get("QUERY_STRING", {"value": ""})["value"] == ""


def test_repeated_values_follow_each_request(server: Server) -> None:
    """The server reuses the str of a value that repeats (path, Host, client address) from one
    request to the next; each request still sees its own values when they change and change
    back, long ones included."""
    long_path = "/" + "x" * 300
    sequence = [("/a", "one.example"), ("/a", "one.example"), ("/b", "two.example:81"),
                (long_path, "two.example:81"), ("/a", "one.example"), (long_path, "one.example")]
    with server.connect() as conn:
        for path, host in sequence:
            conn.send(http_request(path + "?q", host=host))
            env = conn.response().json()
            name = host.partition(":")[0]
            assert value(env, "PATH_INFO") == path
            assert value(env, "RAW_URI") == path + "?q"
            assert value(env, "HTTP_HOST") == host
            assert value(env, "SERVER_NAME") == name
            # The port the server listens on: a client's Host header does not choose it.
            assert value(env, "SERVER_PORT") == str(server.port)
            assert value(env, "REMOTE_ADDR") == "127.0.0.1"


def test_environ_over_a_unix_socket(start_server, tmp_path) -> None:
    """A unix socket has no client address: REMOTE_ADDR is empty, REMOTE_PORT absent, and no
    key holds anything but what PEP 3333 allows (the validator wraps the app)."""
    path = tmp_path / "environ.sock"
    start_server("environ_app:app", binds=[f"unix:{path}"])
    conn = UnixHTTPConnection(str(path))
    try:
        conn.request("GET", "/over/unix?q=1", headers={"X-Thing": "caf\u00e9"})
        resp = conn.getresponse()
        assert resp.status == 200
        env = json.loads(resp.read())
    finally:
        conn.close()
    assert value(env, "REMOTE_ADDR") == ""
    assert "REMOTE_PORT" not in env
    assert value(env, "PATH_INFO") == "/over/unix"
    assert value(env, "QUERY_STRING") == "q=1"
    assert value(env, "HTTP_X_THING") == "caf\u00e9"
    assert value(env, "SERVER_NAME") and value(env, "SERVER_PORT")
    for key, entry in env.items():
        if "." not in key and key != "body":
            assert entry["type"] == "str", (key, entry)
