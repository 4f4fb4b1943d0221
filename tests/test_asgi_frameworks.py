"""Real ASGI frameworks served by ferrocorn with ``-k asgi`` (issue 28): a Quart app
(tests/apps/asgi_quart.py) over HTTP/1.1 and h2c, and Django's admin login flow over its
``asgi.py`` (a project ``django-admin startproject`` makes at test time), driven with httpx as
a browser would: the login page, the POST with the CSRF cookie and token, the redirect, the
admin index. The same Quart app is in the differential against Uvicorn too
(tests/test_asgi_differential.py)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, clean_env, running_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("quart")
pytest.importorskip("django")

UPLOAD = bytes(range(256)) * 1024  # 256 KiB


# ------------------------------------------------------------------------------- Quart


@pytest.fixture(scope="module")
def quart_server() -> Iterator[Server]:
    with running_server("asgi_quart:app", "-k", "asgi", "--http2-cleartext",
                        "prior-knowledge") as server:
        yield server


@pytest.fixture(params=["HTTP/1.1", "HTTP/2"])
def quart(request: pytest.FixtureRequest, quart_server: Server) -> Iterator[httpx.Client]:
    """httpx over HTTP/1.1, or HTTP/2 in cleartext with prior knowledge (h2c)."""
    h2 = request.param == "HTTP/2"
    with httpx.Client(base_url=quart_server.url, http1=not h2, http2=h2,
                      timeout=20) as client:
        reply = client.get("/")
        assert (reply.status_code, reply.http_version) == (200, request.param), reply
        yield client


def test_quart_pages_json_and_lifespan(quart: httpx.Client) -> None:
    reply = quart.get("/")
    assert (reply.status_code, reply.text) == (200, "hello from quart"), reply
    # before_serving ran: the lifespan's startup, before the first request.
    assert quart.get("/serving").text == "started by lifespan"
    reply = quart.get("/items/7", params=[("q", "a"), ("q", "b c")])
    assert reply.status_code == 200, reply
    got = reply.json()
    assert (got["item"], got["q"], got["path"], got["scheme"]) == (7, ["a", "b c"],
                                                                    "/items/7", "http")
    assert got["http_version"] == ("2" if reply.http_version == "HTTP/2" else "1.1")
    reply = quart.post("/json", json={"a": [1, 2, {"b": None}]})
    assert reply.json() == {"got": {"a": [1, 2, {"b": None}]}, "type": "application/json"}


def test_quart_forms_uploads_and_bodies(quart: httpx.Client) -> None:
    reply = quart.post("/form", data={"title": "report", "n": "3"},
                       files={"doc": ("r.bin", UPLOAD, "application/octet-stream")})
    assert reply.status_code == 200, reply
    assert reply.json() == {"fields": {"title": "report", "n": "3"}, "files": {
        "doc": {"filename": "r.bin", "sha256": hashlib.sha256(UPLOAD).hexdigest()}}}
    body = os.urandom(3 << 20)
    reply = quart.post("/body", content=body)
    assert reply.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_quart_streaming_cookies_redirects_and_errors(quart: httpx.Client,
                                                       quart_server: Server) -> None:
    with quart.stream("GET", "/stream") as reply:
        assert reply.status_code == 200
        assert reply.headers.get("content-length") is None  # streamed: no length up front
        assert b"".join(reply.iter_bytes()) == b"".join(b"line %d\n" % i for i in range(20))
    reply = quart.get("/cookie", headers={"Cookie": "seen=yes"})
    assert reply.json() == {"seen": {"seen": "yes"}}
    assert reply.cookies.get("flavour") == "oat"
    assert "HttpOnly" in reply.headers["set-cookie"]
    reply = quart.get("/redirect")
    assert (reply.status_code, reply.headers["location"]) == (302, "/"), reply
    assert quart.get("/redirect", follow_redirects=True).text == "hello from quart"
    assert quart.get("/teapot").status_code == 418
    assert quart.get("/nowhere").status_code == 404
    assert quart.post("/").status_code == 405
    mark = quart_server.mark()
    assert quart.get("/crash").status_code == 500
    quart_server.wait_log("quart view crashed on purpose", since=mark)
    # A def view runs in Quart's thread pool, not on the loop's thread.
    name = quart.get("/sync").text
    assert name != "ferrocorn-asgi-loop" and name, name
    assert quart_server.running()


# ------------------------------------------------------------------------------- Django


ADMIN_USER, ADMIN_PASSWORD = "admin", "parity-s3cret-pass"


def manage(project: Path, *args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=project, env=env, check=True,
                   capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """``django-admin startproject site``, its database migrated, a superuser made."""
    root = tmp_path_factory.mktemp("django")
    env = clean_env({"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
                     "DJANGO_SETTINGS_MODULE": "mysite.settings"})
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(root)],
                   env=env, check=True, capture_output=True, timeout=60)
    settings = root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nALLOWED_HOSTS = ['127.0.0.1', 'localhost']\n")
    manage(root, "migrate", "--noinput", env=env)
    manage(root, "createsuperuser", "--noinput", "--username", ADMIN_USER,
           "--email", "admin@example.com", env=env)
    return root, env


@pytest.fixture(scope="module")
def django_server(django_project: tuple[Path, dict[str, str]]) -> Iterator[Server]:
    root, env = django_project
    with running_server("mysite.asgi:application", "-k", "asgi", "--chdir", str(root),
                        "--access-logfile", "-", env=env) as server:
        yield server


CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def login_page(client: httpx.Client) -> str:
    """GETs the admin login page; returns the form's CSRF token (the cookie is in the jar)."""
    reply = client.get("/admin/login/", params={"next": "/admin/"})
    assert reply.status_code == 200, reply
    assert "text/html" in reply.headers["content-type"]
    assert client.cookies.get("csrftoken"), reply.headers
    match = CSRF_FIELD.search(reply.text)
    assert match, reply.text[:2000]
    return match.group(1)


def test_django_admin_login_flow(django_server: Server) -> None:
    with httpx.Client(base_url=django_server.url, timeout=30) as client:
        # Not logged in: the admin sends us to its login page.
        reply = client.get("/admin/")
        assert reply.status_code == 302, reply
        assert reply.headers["location"] == "/admin/login/?next=/admin/"
        token = login_page(client)
        reply = client.post("/admin/login/?next=/admin/", data={
            "csrfmiddlewaretoken": token, "username": ADMIN_USER,
            "password": ADMIN_PASSWORD, "next": "/admin/"})
        assert reply.status_code == 302, reply.text[:2000]
        assert reply.headers["location"] == "/admin/"
        assert client.cookies.get("sessionid"), reply.headers
        reply = client.get("/admin/")
        assert reply.status_code == 200, reply
        assert "Site administration" in reply.text
        reply = client.get("/admin/auth/user/")
        assert reply.status_code == 200 and ADMIN_USER in reply.text, reply
        # Logging out is a POST with the token as well.
        reply = client.post("/admin/logout/", data={
            "csrfmiddlewaretoken": client.cookies["csrftoken"]})
        assert reply.status_code == 200 and "Logged out" in reply.text, reply
        assert client.get("/admin/").status_code == 302


def test_django_refuses_a_wrong_password_and_a_missing_token(django_server: Server) -> None:
    with httpx.Client(base_url=django_server.url, timeout=30) as client:
        token = login_page(client)
        reply = client.post("/admin/login/?next=/admin/", data={
            "csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": "wrong",
            "next": "/admin/"})
        assert reply.status_code == 200, reply
        assert "Please enter the correct username and password" in reply.text
        assert client.get("/admin/").status_code == 302
    with httpx.Client(base_url=django_server.url, timeout=30) as client:
        reply = client.post("/admin/login/", data={"username": ADMIN_USER,
                                                   "password": ADMIN_PASSWORD})
        assert reply.status_code == 403, reply
        assert "CSRF" in reply.text
    assert django_server.running()
