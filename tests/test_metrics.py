"""Metrics: the Prometheus endpoint (--metrics-bind) served by the master, summed over workers
and kept across worker restarts, and statsd datagrams (--statsd-host)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import urllib.request

from support import Server, clean_env, ferrocorn_bin, free_port, wait_for

APP = "status_app:app"


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in\n{text}"
    return float(m.group(1))


def send_mix(server: Server) -> dict[str, int]:
    """20 x 200, 5 x 404, 3 x 500 (an app that raises); returns the counts by class."""
    for _ in range(20):
        assert server.get("/").status == 200
    for _ in range(5):
        assert server.get("/status/404").status == 404
    for _ in range(3):
        assert server.get("/boom").status == 500
    return {"2xx": 20, "4xx": 5, "5xx": 3}


def test_prometheus_counts_every_workers_requests(start_server) -> None:
    mport = free_port()
    server = start_server(APP, "-w", "2", "--metrics-bind", f"127.0.0.1:{mport}")
    sent = send_mix(server)
    total = sum(sent.values())
    text = wait_for(lambda: (t := scrape(mport)) and
                    value(t, "ferrocorn_request_duration_seconds_count") == total and t,
                    message="metrics counting every request")
    for cls, n in sent.items():
        assert value(text, f'ferrocorn_requests_total{{status="{cls}"}}') == n
    assert value(text, 'ferrocorn_requests_total{status="1xx"}') == 0
    assert value(text, 'ferrocorn_request_duration_seconds_bucket{le="+Inf"}') == total
    buckets = [float(v) for v in
               re.findall(r'^ferrocorn_request_duration_seconds_bucket\{le="[^"]+"\} (\S+)$',
                          text, re.M)]
    assert buckets == sorted(buckets), "histogram buckets are cumulative"
    assert value(text, "ferrocorn_request_duration_seconds_sum") > 0
    # 20 + 5 bodies of 10 bytes, plus the server's own 500 pages.
    assert value(text, "ferrocorn_response_bytes_total") >= 250
    assert value(text, "ferrocorn_workers") == 2
    assert value(text, "ferrocorn_requests_in_flight") == 0
    # The app's own /metrics is the app's: the endpoint lives on its own address.
    assert server.get("/metrics").body == b"app metrics"


def test_counts_survive_a_reload(start_server) -> None:
    mport = free_port()
    server = start_server(APP, "-w", "2", "--metrics-bind", f"127.0.0.1:{mport}")
    for _ in range(10):
        assert server.get("/").status == 200
    wait_for(lambda: value(scrape(mport), 'ferrocorn_requests_total{status="2xx"}') == 10,
             message="10 requests counted")
    server.signal(signal.SIGHUP)
    wait_for(lambda: value(scrape(mport), "ferrocorn_worker_exits_total") == 2,
             timeout=20, message="both old workers gone after HUP")
    assert server.get("/").status == 200
    text = wait_for(lambda: (t := scrape(mport)) and
                    value(t, 'ferrocorn_requests_total{status="2xx"}') == 11 and t,
                    message="old workers' requests kept after they exited")
    assert value(text, "ferrocorn_workers") == 2


def test_endpoint_refuses_what_it_does_not_serve(start_server) -> None:
    mport = free_port()
    start_server(APP, "--metrics-bind", f"127.0.0.1:{mport}")
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 404 ")
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    # A scraper that connects and says nothing does not stop the next one.
    with socket.create_connection(("127.0.0.1", mport), timeout=5):
        assert "ferrocorn_workers 1" in scrape(mport)


def test_metrics_bind_in_use_is_a_clear_error(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [ferrocorn_bin(), "-b", f"127.0.0.1:{free_port()}", "--metrics-bind",
             f"127.0.0.1:{port}", "--chdir", str(tmp_path), "os:getcwd"],
            capture_output=True, text=True, timeout=30, env=clean_env())
    assert proc.returncode != 0
    assert f"--metrics-bind 127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "panicked" not in proc.stderr


def test_statsd_datagrams(start_server) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        port = sink.getsockname()[1]
        server = start_server(APP, "-w", "2", "--statsd-host", f"127.0.0.1:{port}",
                              "--statsd-prefix", "shop")
        sent = send_mix(server)
        lines: list[str] = []

        def requests_seen() -> bool:
            lines.extend(sink.recv(4096).decode().splitlines())
            return (sum(line == "shop.ferrocorn.requests:1|c" for line in lines) >= 28
                    and "shop.ferrocorn.workers:2|g" in lines)

        wait_for(requests_seen, message="a statsd datagram per request and the worker gauge")
    assert sum(line == "shop.ferrocorn.request.status.200:1|c" for line in lines) == sent["2xx"]
    assert sum(line == "shop.ferrocorn.request.status.404:1|c" for line in lines) == sent["4xx"]
    assert sum(line == "shop.ferrocorn.request.status.500:1|c" for line in lines) == sent["5xx"]
    timers = [line for line in lines if line.startswith("shop.ferrocorn.request.duration:")]
    assert len(timers) == 28 and all(re.fullmatch(r".*:\d+\.\d{3}\|ms", t) for t in timers)
