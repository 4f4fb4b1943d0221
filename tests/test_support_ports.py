"""The test helpers' own ports: a child (nginx) given a free port that another process takes
before the child binds it is started again on new ones, a bounded number of times."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from support import RawConn, http_request
from support.net import BIND_ATTEMPTS
from support.nginx import Nginx
from support.skips import needs_tool

needs_nginx = needs_tool("nginx")


def hello_server(port: int) -> str:
    return f"""
        access_log off;
        server {{
            listen 127.0.0.1:{port};
            location / {{ return 200 "from nginx"; }}
        }}"""


@pytest.fixture
def taken_port():
    """A port this test listens on (nginx cannot bind it; a connection to it succeeds)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


@needs_nginx
def test_nginx_starts_again_on_a_new_port_when_its_port_was_taken(tmp_path: Path,
                                                                   taken_port: int) -> None:
    given: list[int] = []

    def http(port: int) -> str:
        given.append(port)
        # The first start listens where another socket already does, as a lost race would.
        return hello_server(taken_port if len(given) == 1 else port)

    with Nginx(tmp_path / "nginx", http) as nginx:
        assert len(given) == 2 and nginx.port == given[1] and nginx.ports == [given[1]]
        with RawConn.tcp("127.0.0.1", nginx.port) as conn:
            conn.send(http_request("/"))
            resp = conn.response()
    assert resp.status == 200 and resp.body == b"from nginx"


@needs_nginx
def test_nginx_gives_up_after_a_bounded_number_of_lost_ports(tmp_path: Path,
                                                             taken_port: int) -> None:
    starts: list[int] = []

    def http(port: int) -> str:
        starts.append(port)
        return hello_server(taken_port)

    with pytest.raises(AssertionError, match=f"lost the port to another process "
                       f"{BIND_ATTEMPTS} times.*Address already in use"):
        Nginx(tmp_path / "nginx", http)
    assert len(starts) == BIND_ATTEMPTS
