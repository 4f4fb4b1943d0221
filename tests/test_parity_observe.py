"""The parity matrix (issues 26 and 28), what the server reports: the access log's fields (the
scheme and protocol among them) and the Prometheus counters by status, for the app's answers,
static files and the server's own answers, over every protocol and interface. The protocols,
the interfaces and their declared differences: support/matrix.py.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from support import free_port, wait_for
from support.matrix import PARITY, Matrix, Served, behaviour

pytestmark = PARITY

CSS = b"h1 { font-weight: bold; }\n" * 40
FORWARDED = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Observed(NamedTuple):
    site: Served
    metrics_port: int


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("observe-static")
    (root / "site.css").write_bytes(CSS)
    return root


@pytest.fixture(scope="module")
def observed(matrix: Matrix, static_dir: Path) -> Observed:
    port = free_port()
    site = matrix.serve("--access-log-json", "--access-logfile", "-",
                        "--metrics-bind", f"127.0.0.1:{port}",
                        "--static-map", f"/static={static_dir}",
                        "--limit-request-body", "1000")
    return Observed(site, port)


def marker() -> str:
    return uuid.uuid4().hex


def access_line(site: Served, mark: str) -> dict[str, Any]:
    """The access log's JSON line for the request whose query string carries ``mark``."""
    def find() -> dict[str, Any] | None:
        for line in site.server.stdout.splitlines():
            if mark in line:
                return json.loads(line)
        return None
    return wait_for(find, timeout=5, message=f"the access line of request {mark}:\n"
                    + site.server.stdout[-2000:])


# ------------------------------------------------------------------------------- access log


def test_access_log_fields(observed: Observed) -> None:
    site = observed.site
    mark = marker()
    reply = site.client.request("GET", f"/r/health?m={mark}",
                                [("User-Agent", "parity/1"), ("Referer", "http://ref.example/")])
    assert reply.status == 200, reply
    line = access_line(site, mark)
    assert line["status"] == 200 and line["bytes"] == 2, line
    assert (line["method"], line["path"], line["query"]) == ("GET", "/r/health", f"m={mark}")
    assert line["uri"] == f"/r/health?m={mark}"
    assert line["protocol"] == site.proto.log_protocol, line
    assert line["scheme"] == site.proto.scheme, line
    assert line["remote_addr"] == "127.0.0.1", line
    assert (line["user_agent"], line["referer"]) == ("parity/1", "http://ref.example/"), line
    assert isinstance(line["duration_us"], int) and line["duration_us"] >= 0


@behaviour("forwarded-headers")
def test_access_log_takes_a_trusted_proxys_word(observed: Observed) -> None:
    site = observed.site
    mark = marker()
    assert site.client.request("GET", f"/r/health?m={mark}", FORWARDED).status == 200
    line = access_line(site, mark)
    assert (line["remote_addr"], line["scheme"]) == ("203.0.113.9", "https"), line


@pytest.mark.app_errors
def test_access_log_of_an_app_error(observed: Observed) -> None:
    site = observed.site
    mark = marker()
    reply = site.client.request("GET", f"/r/raise/before?marker={mark}")
    assert reply.status == 500, reply
    line = access_line(site, mark)
    assert line["status"] == 500 and line["bytes"] == len(reply.body), (line, reply)


def test_access_log_of_a_static_file(observed: Observed) -> None:
    site = observed.site
    mark = marker()
    reply = site.client.request("GET", f"/static/site.css?m={mark}")
    assert reply.status == 200 and reply.body == CSS, reply
    line = access_line(site, mark)
    assert (line["status"], line["bytes"], line["path"]) == (200, len(CSS), "/static/site.css")
    assert line["scheme"] == site.proto.scheme and line["protocol"] == site.proto.log_protocol


def test_access_log_of_the_servers_own_413(observed: Observed) -> None:
    """A request refused on its head is a request answered: logged with its status, as the
    app's answers are."""
    site = observed.site
    mark = marker()
    reply = site.client.request("POST", f"/echo?m={mark}", [("Content-Type", "text/plain")],
                                b"x" * 5000, withhold_body=True)
    assert reply.status == 413, reply
    line = access_line(site, mark)
    assert line["status"] == 413 and line["method"] == "POST", line
    assert line["scheme"] == site.proto.scheme and line["protocol"] == site.proto.log_protocol


# ------------------------------------------------------------------------------- metrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def values(port: int) -> dict[str, float]:
    """The request counters: by status class, the count of durations, bytes, in flight."""
    text = scrape(port)

    def one(name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert m, f"{name} not in\n{text}"
        return float(m.group(1))
    out = {cls: one(f'ferrocorn_requests_total{{status="{cls}"}}') for cls in CLASSES}
    out["count"] = one("ferrocorn_request_duration_seconds_count")
    out["bytes"] = one("ferrocorn_response_bytes_total")
    out["in_flight"] = one("ferrocorn_requests_in_flight")
    return out


def counted(observed: Observed, send: Callable[[], int], classes: dict[str, int]) -> dict:
    """Sends what ``send`` sends (it returns the body bytes the server answered with) and
    checks that the counters grew by exactly ``classes``."""
    port = observed.metrics_port
    before = wait_for(lambda: (v := values(port))["in_flight"] == 0 and v,
                      message="no request in flight before")
    sent_bytes = send()
    total = sum(classes.values())
    after = wait_for(lambda: (v := values(port))["count"] >= before["count"] + total
                     and v["in_flight"] == 0 and v,
                     timeout=5, message=f"{total} requests counted")
    grew = {cls: after[cls] - before[cls] for cls in CLASSES}
    assert grew == {cls: classes.get(cls, 0) for cls in CLASSES}, grew
    assert after["count"] - before["count"] == total
    assert after["bytes"] - before["bytes"] == sent_bytes
    return after


@pytest.mark.app_errors
def test_metrics_count_the_apps_answers_by_status(observed: Observed) -> None:
    client = observed.site.client

    def send() -> int:
        sent = 0
        for path, status in [("/r/health", 200)] * 3 + [("/nope", 404)] * 2 + [
                ("/r/raise/before", 500)]:
            reply = client.request("GET", path)
            assert reply.status == status, reply
            sent += len(reply.body)
        return sent
    counted(observed, send, {"2xx": 3, "4xx": 2, "5xx": 1})


def test_metrics_count_static_answers(observed: Observed) -> None:
    client = observed.site.client

    def send() -> int:
        hit = client.request("GET", "/static/site.css")
        assert hit.status == 200 and hit.body == CSS, hit
        not_modified = client.request("GET", "/static/site.css",
                                      [("If-None-Match", hit.header("etag") or "")])
        assert not_modified.status == 304, not_modified
        miss = client.request("GET", "/static/missing.css")
        assert miss.status == 404, miss
        return len(hit.body) + len(miss.body)
    counted(observed, send, {"2xx": 1, "3xx": 1, "4xx": 1})


def test_metrics_count_the_servers_own_413(observed: Observed) -> None:
    """docs/metrics.md: requests answered, by status class, the server's own included."""
    client = observed.site.client

    def send() -> int:
        reply = client.request("POST", "/echo", [("Content-Type", "text/plain")],
                               b"x" * 5000, withhold_body=True)
        assert reply.status == 413, reply
        return len(reply.body)
    counted(observed, send, {"4xx": 1})
