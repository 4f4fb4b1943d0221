"""Issue 16: TLS on ferrocorn's own listeners (HTTPS, mutual TLS, certificate reloads), driven
with real clients: Python's ssl/http.client, curl and openssl s_client. Every certificate and
key is made here at run time (a throwaway CA), never committed."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support import RawConn, Server, free_port, parse_responses, tcp_sockets, vm_kib, wait_for
from support.certs import NOW, Issued, issue, write_key
from support.procfs import alive, children
from support.server import UnixHTTPConnection, serving

APP = "tls_app:app"


# --------------------------------------------------------------------------- certificates

@dataclass
class Pki:
    dir: Path
    ca: Issued
    server: Issued
    client_ca: Issued
    client: Issued
    rogue_ca: Issued
    rogue_client: Issued
    expired_server: Issued
    expired_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = issue(d, "ca", cn="Ferrocorn Test CA", ca=True)
    client_ca = issue(d, "client-ca", cn="Ferrocorn Client CA", ca=True)
    rogue_ca = issue(d, "rogue-ca", cn="Rogue CA", ca=True)
    return Pki(
        dir=d, ca=ca,
        server=issue(d, "server", cn="localhost", issuer=ca, serial=1001),
        client_ca=client_ca,
        client=issue(d, "client", cn="alice", issuer=client_ca, client=True),
        rogue_ca=rogue_ca,
        rogue_client=issue(d, "rogue-client", cn="mallory", issuer=rogue_ca, client=True),
        expired_server=issue(d, "expired", cn="localhost", issuer=ca, expired=True),
        expired_client=issue(d, "expired-client", cn="bob", issuer=client_ca, client=True,
                             expired=True),
    )


def client_context(pki: Pki, cert: Issued | None = None, *,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def tls_server(pki: Pki, *args: str, cert: Issued | None = None, **kwargs: Any) -> Server:
    cert = cert or pki.server
    return Server(APP, "--certfile", str(cert.cert_path), "--keyfile", str(cert.key_path),
                  *args, **kwargs)


@pytest.fixture
def serve() -> Iterator[Callable[[Server], Server]]:
    """Starts servers for one test; stops them (and checks for panics) at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda server: stack.enter_context(serving(server))


@pytest.fixture(scope="module")
def https(pki: Pki) -> Iterator[Server]:
    """One TLS server for the tests that only talk to it, with a unix-socket bind beside."""
    sock = pki.dir / "plain.sock"
    server = tls_server(pki, "-w", "2", "--metrics-bind", f"127.0.0.1:{free_port()}",
                        "--access-logfile", "-",
                        "--access-logformat", '%(H)s %({wsgi.url_scheme}e)s %(s)s %(U)s',
                        binds=["127.0.0.1:0", f"unix:{sock}"])
    with serving(server):
        yield server


def https_conn(server: Server, ctx: ssl.SSLContext, host: str = "localhost",
               timeout: float = 10) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(host, server.port, context=ctx, timeout=timeout)


def get_json(server: Server, ctx: ssl.SSLContext, path: str = "/env") -> dict[str, Any]:
    conn = https_conn(server, ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return json.loads(body)
    finally:
        conn.close()


def tls_socket(server: Server, ctx: ssl.SSLContext, timeout: float = 10) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


# --------------------------------------------------------------------------- plain HTTPS

def test_get_environ_and_listening_line(https: Server, pki: Pki) -> None:
    assert https.url.startswith("https://127.0.0.1:"), https.addresses
    env = get_json(https, client_context(pki))
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SERVER_PORT"] == str(https.port)
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"].startswith("TLS13_")
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert env["SSL_CLIENT_S_DN"] is None and env["SSL_CLIENT_CERT"] is None


def test_tls12_client(https: Server, pki: Pki) -> None:
    env = get_json(https, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
    assert env["SSL_PROTOCOL"] == "TLSv1.2"
    assert env["SSL_CIPHER"].startswith("TLS_ECDHE_ECDSA_WITH_"), env


def test_streamed_post_and_chunked_response(https: Server, pki: Pki) -> None:
    pieces = [os.urandom(50_000) for _ in range(40)]  # 2 MB, sent chunked as it is made
    conn = https_conn(https, client_context(pki))
    conn.request("POST", "/echo", body=iter(pieces), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    got = json.loads(resp.read())
    assert got == {"length": 2_000_000,
                   "sha256": hashlib.sha256(b"".join(pieces)).hexdigest()}
    # Same connection: a chunked response.
    conn.request("GET", "/chunked")
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.read() == b"".join(f"piece {i}\n".encode() for i in range(50))
    conn.close()


def test_keep_alive_and_pipelining(https: Server, pki: Pki) -> None:
    with tls_socket(https, client_context(pki)) as s:
        conn = RawConn(s)
        # Three requests in one TLS record: the server must serve all of them from what rustls
        # decrypted at once, with no socket readiness left to wake it.
        conn.send(b"".join(f"GET /env?{i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
                           for i in range(3)))
        for _ in range(3):
            resp = conn.response()
            assert resp.status == 200 and resp.json()["HTTPS"] == "on"
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert conn.response().body == b"hello over tls\n"


def test_file_wrapper_over_tls(https: Server, pki: Pki) -> None:
    size = 3 * 1024 * 1024 + 17
    conn = https_conn(https, client_context(pki))
    conn.request("GET", f"/file?{size}")
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and len(body) == size
    expected = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    conn.close()


def test_static_files_over_tls(serve: Any, pki: Pki, tmp_path: Path) -> None:
    """Static files (--static-map) over TLS: the file's bytes cannot use sendfile(2); a HEAD
    answer (a head with no file bytes after it) must still leave rustls's buffer at once."""
    root = tmp_path / "static"
    root.mkdir()
    big = os.urandom(700_000)
    (root / "big.bin").write_bytes(big)
    (root / "small.txt").write_text("small file\n")
    server = serve(tls_server(pki, "--static-map", f"/static={root}"))
    conn = https_conn(server, client_context(pki))
    for path, body in (("/static/big.bin", big), ("/static/small.txt", b"small file\n")):
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == body, path
        conn.request("HEAD", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert resp.getheader("Content-Length") == str(len(body))
    conn.close()


def serve_big_static_file(serve: Any, pki: Pki, tmp_path: Path) -> tuple[Server, bytes]:
    """One TLS worker serving a 32 MiB static file at /static/big.bin, and the file's bytes."""
    root = tmp_path / "static"
    root.mkdir()
    data = os.urandom(1 << 20) * 32
    (root / "big.bin").write_bytes(data)
    return serve(tls_server(pki, "--static-map", f"/static={root}", "-w", "1")), data


def assert_whole_file(got: bytes | bytearray, data: bytes) -> None:
    """`got` is a 200 response whose body is exactly `data`."""
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_stalled_reader_of_a_large_file_holds_bounded_memory(serve: Any, pki: Pki,
                                                              tmp_path: Path) -> None:
    """A 32 MiB static file to a TLS client that stops reading after 1 MiB: sendfile(2) cannot
    cross TLS, so the file is read, encrypted and written in 64 KiB pieces as the socket takes
    them; the worker's peak RSS must not grow with the file."""
    server, data = serve_big_static_file(serve, pki, tmp_path)
    pids = server.worker_pids() or [server.pid]
    # One small answer first, so the baseline has a TLS connection's state in it.
    with tls_socket(server, client_context(pki)) as s:
        s.sendall(b"GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    base = max(vm_kib(pid, "VmHWM") for pid in pids)
    with tls_socket(server, client_context(pki), timeout=30) as s:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = bytearray()
        while len(got) < (1 << 20):
            got += s.recv(1 << 16)
        # Not reading for a while (a stalled client, not synchronisation): a server that
        # buffered the rest would do it now.
        stalled_until = time.monotonic() + 1.0
        peak = base
        while time.monotonic() < stalled_until:
            peak = max(peak, *(vm_kib(pid, "VmHWM") for pid in pids))
            time.sleep(0.05)
        while piece := s.recv(1 << 20):
            got += piece
    assert_whole_file(got, data)
    peak = max(peak, *(vm_kib(pid, "VmHWM") for pid in pids))
    assert peak - base < 8 * 1024, f"worker peak RSS grew by {(peak - base) // 1024} MiB"


def server_side_unsent(server_port: int, client_port: int) -> int:
    """Bytes the server's socket of one loopback connection holds unacknowledged or unsent."""
    for sock in tcp_sockets():
        if sock.local_port == server_port and sock.remote_port == client_port:
            return sock.tx_queue
    raise AssertionError(f"no socket {server_port} -> {client_port} in /proc/net/tcp")


def test_stalled_reader_leaves_little_queued_in_the_kernel(serve: Any, pki: Pki,
                                                          tmp_path: Path) -> None:
    """TLS sockets keep at most about one record unsent (TCP_NOTSENT_LOWAT, docs/design.md):
    a client that stops reading a 32 MiB file pins tens of KiB of the server's kernel memory,
    not the megabytes a send buffer grows to, and still gets every byte when it reads on."""
    server, data = serve_big_static_file(serve, pki, tmp_path)
    with tls_socket(server, client_context(pki), timeout=30) as s:
        client_port = s.getsockname()[1]
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = bytearray()
        while len(got) < (4 << 20):
            got += s.recv(1 << 20)
        # The client stops reading. The server writes until the client's window and its own
        # limit stop it: wait for the queue to stop changing (while data still flows, bytes
        # in flight count too), then see what it holds.
        deadline = time.monotonic() + 10
        queued, before = server_side_unsent(server.port, client_port), -1
        while queued != before and time.monotonic() < deadline:
            time.sleep(0.1)
            queued, before = server_side_unsent(server.port, client_port), queued
        while piece := s.recv(1 << 20):
            got += piece
    assert_whole_file(got, data)
    assert 0 < queued <= 256 * 1024, f"{queued} bytes queued in the server's socket"


def test_slow_reader_gets_everything(https: Server, pki: Pki) -> None:
    """A client reading a 1 MiB file slowly: the bounded copy waits on it, nothing is lost."""
    size = 1024 * 1024
    with tls_socket(https, client_context(pki)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.sendall(f"GET /file?{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            piece = s.recv(16384)
            if not piece:
                break
            data += piece
            if len(data) < 256 * 1024:
                time.sleep(0.01)  # a slow client, not synchronisation
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and len(body) == size


def test_curl(https: Server, pki: Pki, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(300_000))
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(pki.ca.cert_path), "--data-binary", f"@{body}",
         "-H", "Content-Type: application/octet-stream", "-H", "Expect: 100-continue",
         f"https://localhost:{https.port}/echo"],
        capture_output=True, timeout=30, check=True)
    assert json.loads(out.stdout) == {"length": 300_000,
                                      "sha256": hashlib.sha256(body.read_bytes()).hexdigest()}
    # Without the CA, curl refuses the certificate.
    refused = subprocess.run(["curl", "-sS", f"https://localhost:{https.port}/"],
                             capture_output=True, timeout=30)
    assert refused.returncode != 0


def test_alpn_h2_over_tls(https: Server, pki: Pki, serve: Any) -> None:
    """ALPN offers h2 first (--http-protocols): curl gets HTTP/2 over TLS, with the TLS
    environ; with --http-protocols h1 it gets HTTP/1.1."""
    def curl(server: Server) -> tuple[str, dict[str, Any]]:
        out = subprocess.run(
            ["curl", "-sS", "--http2", "--cacert", str(pki.ca.cert_path), "-w",
             "\n%{http_version}", f"https://localhost:{server.port}/env"],
            capture_output=True, timeout=30, check=True).stdout.decode()
        body, _, version = out.rpartition("\n")
        return version, json.loads(body)

    version, env = curl(https)
    assert version == "2" and env["HTTPS"] == "on" and env["wsgi.url_scheme"] == "https"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    h1_only = serve(tls_server(pki, "--http-protocols", "h1"))
    version, env = curl(h1_only)
    assert version == "1.1" and env["HTTPS"] == "on"


def test_openssl_s_client(https: Server, pki: Pki) -> None:
    request = b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    for version in ("-tls1_2", "-tls1_3"):
        out = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{https.port}", "-servername",
             "localhost", "-CAfile", str(pki.ca.cert_path), "-verify_return_error",
             "-quiet", version],
            input=request, capture_output=True, timeout=30)
        assert b"HTTP/1.1 200 OK" in out.stdout, (version, out.stdout, out.stderr)
        assert b'"HTTPS": "on"' in out.stdout


def test_default_suite_is_the_clients_choice(https: Server, pki: Pki) -> None:
    """Without --ciphers the client's order of preference picks the TLS 1.3 suite (a client
    without AES hardware lists ChaCha20 first); see docs/tls.md for why the server does not
    impose AES-128-GCM."""
    request = b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    for suites, chosen in (
            ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
             "TLS13_CHACHA20_POLY1305_SHA256"),
            ("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256"),
            ("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384")):
        out = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{https.port}", "-servername",
             "localhost", "-CAfile", str(pki.ca.cert_path), "-verify_return_error",
             "-quiet", "-tls1_3", "-ciphersuites", suites],
            input=request, capture_output=True, timeout=30)
        body = out.stdout.partition(b"\r\n\r\n")[2]
        assert body, (suites, out.stdout, out.stderr)
        assert json.loads(body)["SSL_CIPHER"] == chosen, suites


def test_unix_socket_stays_cleartext(https: Server) -> None:
    conn = UnixHTTPConnection(https.unix_path)
    conn.request("GET", "/env")
    env = json.loads(conn.getresponse().read())
    assert env["wsgi.url_scheme"] == "http" and env["HTTPS"] is None
    conn.close()


def test_cleartext_to_tls_port_gets_400(https: Server) -> None:
    with RawConn.tcp("127.0.0.1", https.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = conn.read_until_close(5)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    assert b"HTTPS" in data


def test_garbage_and_stalled_handshakes_are_dropped(serve: Any, pki: Pki) -> None:
    """--header-timeout bounds the handshake: silence, or half a ClientHello."""
    https = serve(tls_server(pki, "--header-timeout", "2"))
    started = time.monotonic()
    with RawConn.tcp("127.0.0.1", https.port) as silent, \
            RawConn.tcp("127.0.0.1", https.port) as partial:
        partial.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert silent.read_until_close(8) == b""
        partial.read_until_close(8)  # an alert at most, then the close
    assert time.monotonic() - started < 6
    with RawConn.tcp("127.0.0.1", https.port) as binary:
        binary.send(b"\x00\x01\x02\x03")
        assert binary.read_until_close(5) == b""
    assert https.running()


def test_metrics_and_access_log(https: Server, pki: Pki) -> None:
    metrics_port = int(https.args[https.args.index("--metrics-bind") + 1].rsplit(":", 1)[1])
    get_json(https, client_context(pki), "/env")
    with RawConn.tcp("127.0.0.1", https.port) as conn:
        conn.send(b"\x00junk")
        conn.read_until_close(5)

    def scrape() -> dict[str, float]:
        c = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.startswith("ferrocorn_tls_")}

    found = wait_for(lambda: (m := scrape()).get("ferrocorn_tls_handshakes_total", 0) >= 1
                     and m.get("ferrocorn_tls_handshake_failures_total", 0) >= 1 and m)
    assert found
    assert wait_for(lambda: "HTTP/1.1 https 200 /env" in https.stdout)


def test_200_concurrent_keep_alive_clients(https: Server, pki: Pki) -> None:
    ctx = client_context(pki)

    async def client(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", https.port, ssl=ctx,
                                                       server_hostname="localhost")
        ok = 0
        for j in range(3):
            writer.write(f"GET /?{i}-{j} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            assert await reader.readexactly(length) == b"hello over tls\n"
            ok += 1
        writer.close()
        return ok

    async def main() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(200))), 60)

    assert asyncio.run(main()) == [3] * 200


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_before_the_handshake(serve: Any, pki: Pki, version: str) -> None:
    """The PROXY preamble and the ClientHello in one segment: the server must take the
    preamble and not a byte of the handshake with it."""
    from test_proxy import PROXY_IP, v2_header
    preamble = (b"PROXY TCP4 198.51.100.22 10.0.0.1 51234 443\r\n" if version == "v1"
                else v2_header("198.51.100.22", 51234, "10.0.0.1", 443))
    server = serve(tls_server(pki, "--proxy-protocol", "--forwarded-allow-ips", PROXY_IP))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                  source_address=(PROXY_IP, 0)) as sock:
        first = True
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = outgoing.read()
                sock.sendall(preamble + data if first else data)
                first = False
                chunk = sock.recv(65536)
                assert chunk, "closed during the handshake"
                incoming.write(chunk)
        tls.write(b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        sock.sendall(outgoing.read())
        received = b""
        for _ in range(10_000):
            try:
                piece = tls.read(65536)
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                incoming.write(chunk)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not piece:
                break
            received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), received
    env = json.loads(body)
    assert env["REMOTE_ADDR"] == "198.51.100.22" and env["HTTPS"] == "on"


def test_proxy_protocol_with_tls_refuses_untrusted_peers(serve: Any, pki: Pki) -> None:
    server = serve(tls_server(pki, "--proxy-protocol", "--forwarded-allow-ips", "127.0.0.5"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get_json(server, client_context(pki))  # from 127.0.0.1: not trusted


# --------------------------------------------------------------------------- mutual TLS

def _mtls_server(pki: Pki, reqs: int) -> Server:
    return tls_server(pki, "--cert-reqs", str(reqs), "--ca-certs", str(pki.client_ca.cert_path))


def _refused(server: Server, ctx: ssl.SSLContext) -> bool:
    """True when the server refuses the client's certificate (at the handshake, or for TLS
    1.3 at the first read after it)."""
    try:
        get_json(server, ctx)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return True
    return False


def test_mtls_required(serve: Any, pki: Pki) -> None:
    server = serve(_mtls_server(pki, 2))
    env = get_json(server, client_context(pki, pki.client))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=alice,O=Ferrocorn Tests"
    assert env["SSL_CLIENT_I_DN"] == "CN=Ferrocorn Client CA,O=Ferrocorn Tests"
    pem = pki.client.cert.public_bytes(serialization.Encoding.PEM).decode()
    assert env["SSL_CLIENT_CERT"] == pem
    assert _refused(server, client_context(pki))  # no certificate
    assert _refused(server, client_context(pki, pki.rogue_client))  # wrong CA
    assert _refused(server, client_context(pki, pki.expired_client))


def test_mtls_optional(serve: Any, pki: Pki) -> None:
    server = serve(_mtls_server(pki, 1))
    assert get_json(server, client_context(pki))["SSL_CLIENT_VERIFY"] == "NONE"
    env = get_json(server, client_context(pki, pki.client))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS" and env["SSL_CLIENT_S_DN"].startswith("CN=alice")
    assert _refused(server, client_context(pki, pki.rogue_client))


def test_mtls_none_ignores_client_certs(https: Server, pki: Pki) -> None:
    env = get_json(https, client_context(pki, pki.rogue_client))
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and env["SSL_CLIENT_S_DN"] is None


def test_handshake_failures_are_debug_lines(serve: Any, pki: Pki) -> None:
    server = serve(tls_server(pki, "--cert-reqs", "2", "--ca-certs",
                              str(pki.client_ca.cert_path), "--log-level", "debug"))
    assert _refused(server, client_context(pki, pki.rogue_client))
    server.wait_log(r"127\.0\.0\.1:\d+: TLS handshake failed: invalid peer certificate")
    assert server.running()


# --------------------------------------------------------------------------- certificates

def test_expired_server_certificate(serve: Any, pki: Pki) -> None:
    server = serve(tls_server(pki, cert=pki.expired_server))
    assert "the certificate expired on" in server.log
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        get_json(server, client_context(pki))


@pytest.mark.parametrize("kind", ["rsa-pkcs1", "rsa-pkcs8", "ec-sec1"])
def test_key_formats_load(serve: Any, pki: Pki, tmp_path: Path, kind: str) -> None:
    key = (rsa.generate_private_key(65537, 2048) if kind.startswith("rsa")
           else ec.generate_private_key(ec.SECP384R1()))
    issued = issue(tmp_path, kind, cn="localhost", issuer=pki.ca, key=key)
    write_key(key, issued.key_path, "pkcs8" if kind.endswith("pkcs8") else "traditional")
    marker = {"rsa-pkcs1": b"BEGIN RSA PRIVATE KEY", "rsa-pkcs8": b"BEGIN PRIVATE KEY",
              "ec-sec1": b"BEGIN EC PRIVATE KEY"}[kind]
    assert marker in issued.key_path.read_bytes()
    server = serve(tls_server(pki, cert=issued))
    assert get_json(server, client_context(pki))["HTTPS"] == "on"


def _start_fails(*args: str) -> tuple[int, str]:
    server = Server(APP, *args)
    proc = subprocess.run(server.command(), capture_output=True, timeout=30, env=server.env,
                          cwd=server.cwd)
    return proc.returncode, proc.stderr.decode()


def test_startup_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    cert, key = str(pki.server.cert_path), str(pki.server.key_path)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    encrypted = tmp_path / "encrypted.key"
    write_key(pki.server.key, encrypted, password=b"secret")
    missing = tmp_path / "missing.pem"
    other_key = str(pki.client.key_path)
    cases = [
        (["--certfile", str(missing), "--keyfile", key], [str(missing)]),
        (["--certfile", cert, "--keyfile", str(garbage)], [str(garbage), "no private key"]),
        (["--certfile", cert, "--keyfile", str(encrypted)], [str(encrypted), "encrypted"]),
        (["--certfile", cert, "--keyfile", other_key], [other_key, "does not match", cert]),
        (["--certfile", key, "--keyfile", key], [key, "no PEM certificate"]),
        (["--certfile", cert], ["--keyfile"]),
        (["--certfile", cert, "--keyfile", key, "--cert-reqs", "2"], ["--ca-certs"]),
        (["--certfile", cert, "--keyfile", key, "--cert-reqs", "1", "--ca-certs",
          str(garbage)], [str(garbage)]),
        (["--check-config", "--certfile", cert, "--keyfile", other_key], ["does not match"]),
    ]
    config_error_code, _ = _start_fails("--bind", "nonsense:address:here")
    for args, needles in cases:
        code, err = _start_fails(*args)
        assert code == config_error_code != 0, (args, code, err)
        error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
        assert len(error_lines) == 1, err
        for needle in needles:
            assert needle in error_lines[0], (needle, err)
        assert "Booting worker" not in err


def test_unknown_cipher_is_named(pki: Pki) -> None:
    code, err = _start_fails("--certfile", str(pki.server.cert_path), "--keyfile",
                             str(pki.server.key_path), "--ciphers",
                             "ECDHE-RSA-AES128-GCM-SHA256:RC4-MD5")
    assert code != 0 and '"RC4-MD5"' in err, err


def test_ciphers_and_min_version(serve: Any, pki: Pki) -> None:
    server = serve(tls_server(pki, "--ciphers",
                              "ECDHE-ECDSA-CHACHA20-POLY1305:TLS_AES_128_GCM_SHA256",
                              "--tls-min-version", "1.2"))
    env = get_json(server, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
    assert env["SSL_CIPHER"] == "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
    assert get_json(server, client_context(pki))["SSL_CIPHER"] == "TLS13_AES_128_GCM_SHA256"
    # No suite in common (TLS 1.2, the client wants one the server was not given): refused.
    unshared = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
    unshared.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        get_json(server, unshared)
    only13 = serve(tls_server(pki, "--tls-min-version", "1.3"))
    with pytest.raises(ssl.SSLError):
        get_json(only13, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
    assert get_json(only13, client_context(pki))["SSL_PROTOCOL"] == "TLSv1.3"


def test_config_file_and_cmd_args(serve: Any, pki: Pki, tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"certfile = {str(pki.server.cert_path)!r}\n"
                    f"keyfile = {str(pki.server.key_path)!r}\n"
                    "do_handshake_on_connect = True\nsuppress_ragged_eofs = True\n"
                    f"ca_certs = {str(pki.client_ca.cert_path)!r}\n")
    server = serve(Server(APP, "-c", str(conf),
                          env={"FERROCORN_CMD_ARGS": "--cert-reqs 2"}))
    assert "no effect" not in server.log, server.log
    env = get_json(server, client_context(pki, pki.client))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"


# --------------------------------------------------------------------------- reloads

def _serial(server: Server, ctx: ssl.SSLContext) -> int:
    with tls_socket(server, ctx) as s:
        der = s.getpeercert(binary_form=True)
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _replace(src: Path, dst: Path) -> None:
    """Renewals are written beside the file and renamed over it (as certbot's symlinks flip)."""
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_hup_picks_up_renewed_certificate_under_load(serve: Any, pki: Pki,
                                                     tmp_path: Path) -> None:
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copyfile(pki.server.cert_path, live_cert)
    shutil.copyfile(pki.server.key_path, live_key)
    server = serve(Server(APP, "-w", "2", "--certfile", str(live_cert), "--keyfile",
                          str(live_key)))
    ctx = client_context(pki)
    assert _serial(server, ctx) == 1001

    failures: list[str] = []
    done = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal done
        while not stop.is_set():
            try:
                _serial(server, ctx)
                done += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: done >= 20)
        # A renewal that does not load: the old certificate keeps serving.
        mark = server.mark()
        live_key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        server.signal(signal.SIGHUP)
        server.wait_log(r"keeping the current TLS certificate", since=mark)
        wait_for(lambda: len(server.worker_pids()) == 2 and server.log_since(mark).count(
            "Booting worker") >= 2)
        assert _serial(server, ctx) == 1001
        # The real renewal, new serial: seen once the new workers serve.
        renewed = issue(tmp_path, "renewed", cn="localhost", issuer=pki.ca, serial=2002)
        _replace(renewed.key_path, live_key)
        _replace(renewed.cert_path, live_cert)
        server.signal(signal.SIGHUP)
        wait_for(lambda: _serial(server, ctx) == 2002, timeout=20)
        before = done
        wait_for(lambda: done >= before + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert done > 40


def test_tls_port_with_plain_http_client_in_conftest_wait(serve: Any, pki: Pki) -> None:
    """Server.start's readiness probe (plain bytes to the TLS port) gets docs/tls.md's
    cleartext 400 saying the port speaks HTTPS, then a close, and the server goes on serving
    TLS: a second probe gets the same, and a TLS client is served after each."""
    server = serve(tls_server(pki))
    for _ in range(2):
        with server.connect() as conn:
            conn.send(b"READY?\r\n\r\n")
            (resp,) = parse_responses(conn.read_until_close(10))
        assert resp.status == 400 and b"This port speaks HTTPS" in resp.body, resp
        assert get_json(server, client_context(pki))["wsgi.url_scheme"] == "https"


# --------------------------------------------------------------------------- revocation lists

def _crl(path: Path, issuer: Issued, revoked: list[Issued], *, next_update_days: int = 7) -> Path:
    """A PEM CRL signed by `issuer` listing `revoked`, written (renamed into place) at `path`."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.cert.subject)
               .last_update(NOW - datetime.timedelta(days=1))
               .next_update(NOW + datetime.timedelta(days=next_update_days))
               # RFC 5280 §5.2.3: conforming CRLs carry a number (webpki insists).
               .add_extension(x509.CRLNumber(int(time.time() * 1000)), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer.key.public_key()), critical=False))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.cert.serial_number)
            .revocation_date(NOW - datetime.timedelta(hours=1))
            .build())
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(builder.sign(issuer.key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM))
    os.replace(tmp, path)
    return path


def test_crl_refuses_revoked_client_certificates_and_hup_reads_it_again(
        serve: Any, pki: Pki, tmp_path: Path) -> None:
    carol = issue(tmp_path, "carol", cn="carol", issuer=pki.client_ca, client=True)
    crl = _crl(tmp_path / "client-ca.crl", pki.client_ca, [carol])
    server = serve(tls_server(pki, "-w", "1", "--cert-reqs", "2", "--ca-certs",
                              str(pki.client_ca.cert_path), "--crlfile", str(crl),
                              "--log-level", "debug"))
    assert get_json(server, client_context(pki, pki.client))["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert _refused(server, client_context(pki, carol))
    server.wait_log(r"TLS handshake failed: .*[Rr]evoked")
    # Alice is revoked too: the renewed list takes effect with the new worker after a HUP.
    _crl(crl, pki.client_ca, [carol, pki.client])
    server.signal(signal.SIGHUP)
    wait_for(lambda: _refused(server, client_context(pki, pki.client)), timeout=20,
             message="the renewed CRL to refuse alice")
    assert _refused(server, client_context(pki, carol))


def test_crl_refuses_a_ca_it_has_no_list_for(serve: Any, pki: Pki, tmp_path: Path) -> None:
    """As nginx's ssl_crl: with a CRL file, a client whose CA published none there is
    refused (its revocation status is unknown), even though the CA is trusted."""
    both = tmp_path / "both-cas.pem"
    both.write_bytes(pki.client_ca.cert_path.read_bytes() + pki.rogue_ca.cert_path.read_bytes())
    crl = _crl(tmp_path / "client-ca.crl", pki.client_ca, [])
    server = serve(tls_server(pki, "--cert-reqs", "2", "--ca-certs", str(both),
                              "--crlfile", str(crl)))
    assert get_json(server, client_context(pki, pki.client))["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert _refused(server, client_context(pki, pki.rogue_client))


def test_crl_past_its_next_update_still_applies_with_a_warning(
        serve: Any, pki: Pki, tmp_path: Path) -> None:
    carol = issue(tmp_path, "carol", cn="carol", issuer=pki.client_ca, client=True)
    crl = _crl(tmp_path / "stale.crl", pki.client_ca, [carol], next_update_days=-1)
    server = serve(tls_server(pki, "--cert-reqs", "1", "--ca-certs",
                              str(pki.client_ca.cert_path), "--crlfile", str(crl)))
    assert "was due to be replaced on" in server.log and str(crl) in server.log
    assert _refused(server, client_context(pki, carol))
    assert get_json(server, client_context(pki, pki.client))["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_crl_startup_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    cert, key, ca = (str(pki.server.cert_path), str(pki.server.key_path),
                     str(pki.client_ca.cert_path))
    not_a_crl = str(pki.client_ca.cert_path)
    missing = str(tmp_path / "missing.crl")
    cases = [
        (["--crlfile", missing], ["--cert-reqs"]),
        (["--cert-reqs", "2", "--ca-certs", ca, "--crlfile", missing], [missing]),
        (["--cert-reqs", "2", "--ca-certs", ca, "--crlfile", not_a_crl],
         [not_a_crl, "BEGIN X509 CRL"]),
    ]
    config_error_code, _ = _start_fails("--bind", "nonsense:address:here")
    for args, needles in cases:
        code, err = _start_fails("--certfile", cert, "--keyfile", key, *args)
        assert code == config_error_code != 0, (args, code, err)
        error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
        assert len(error_lines) == 1, err
        for needle in needles:
            assert needle in error_lines[0], (needle, err)


# ----------------------------------------------------------------------------- USR2 upgrade

VERSIONED_APP = '''
VERSION = {version!r}


def app(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def test_usr2_over_tls_runs_the_new_code(serve: Any, pki: Pki, tmp_path: Path) -> None:
    """USR2 on a TLS server started with --preload (the old master holds the app's code):
    the new master it starts imports the code as it is now, serves it over TLS on the same
    socket, and once the old master's workers are stopped (WINCH) and it is gone (TERM),
    every answer is the new code's."""
    apps = tmp_path / "apps"
    apps.mkdir()
    module = apps / "versioned.py"
    module.write_text(VERSIONED_APP.format(version="one"))
    pidfile = tmp_path / "ferrocorn.pid"
    server = serve(Server("versioned:app", "--certfile", str(pki.server.cert_path),
                          "--keyfile", str(pki.server.key_path), "--preload", "-w", "1",
                          "-p", str(pidfile), "--pythonpath", str(apps),
                          "--no-control-socket"))
    ctx = client_context(pki)

    def version() -> str:
        conn = https_conn(server, ctx)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            return resp.read().decode()
        finally:
            conn.close()

    assert version() == "one"
    module.write_text(VERSIONED_APP.format(version="two"))
    server.signal(signal.SIGUSR2)
    new_master = int(wait_for(lambda: Path(f"{pidfile}.oldbin").exists()
                              and pidfile.exists() and pidfile.read_text().strip(),
                              message="the new master's pid file"))
    assert new_master != server.pid
    wait_for(lambda: children(new_master), message="the new master's worker")
    # Both generations accept on the one socket until the old one's workers stop.
    wait_for(lambda: version() == "two", message="an answer from the new code")
    server.signal(signal.SIGWINCH)
    wait_for(lambda: not children(server.pid) - {new_master},
             message="the old master's workers to stop")
    assert {version() for _ in range(10)} == {"two"}
    server.signal(signal.SIGTERM)
    # (Not wait_exit: the new master shares the log pipe, so the readers see no end yet.)
    assert server.proc.wait(15) == 0
    assert {version() for _ in range(10)} == {"two"}, "the new master serves alone"
    assert pidfile.read_text().strip() == str(new_master)
    os.kill(new_master, signal.SIGTERM)
    wait_for(lambda: not alive(new_master), timeout=20, message="the new master to stop")
