"""A raw WebSocket client for the conformance suite: frames built and read byte by byte, so a
test can send what no client library would (reserved bits, unknown opcodes, unmasked frames,
oversized control frames, UTF-8 split anywhere) and see exactly what the server answers.

It reads only when told to, with a socket timeout as the bound: no thread, no sleep.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import zlib
from dataclasses import dataclass

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bool = True) -> bytes:
    """One frame as a client sends it (masked unless ``mask`` is false)."""
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    head += key
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(
        (key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") if n else b""
    return bytes(head) + masked


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """A close frame's status code (None when it has none)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class Closed(Exception):
    """The server sent a close frame (``code`` None: it had no status), or ended the connection
    without one (``frame`` None)."""

    def __init__(self, close: Frame | None) -> None:
        self.frame = close
        self.code = close.close_code if close else None
        self.reason = close.payload[2:].decode("utf-8", "replace") if close else ""
        super().__init__(self.code, self.reason)


class WsClient:
    """One WebSocket connection opened with a real handshake on 127.0.0.1 (TLS with ``ctx``)."""

    def __init__(self, port: int, path: str = "/", *, ctx: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = \
            ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
        self.buf = b""
        self.last_rsv = 0
        key = base64.b64encode(os.urandom(16))
        fields = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Key": key.decode(), "Sec-WebSocket-Version": "13",
                  **(headers or {})}
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                       fields.items()) + "\r\n"
        self.sock.sendall(request.encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in
                        (line.split(":", 1) for line in lines[1:] if line)}
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == want, self.headers

    # ------------------------------------------------------------------ bytes
    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buf += chunk
        return bool(chunk)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise ConnectionError(f"connection ended before {marker!r}: {self.buf!r}")
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _read(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: bool | int) -> None:
        # Through send_raw: over HTTP/2 the frame goes in the stream's DATA.
        self.send_raw(frame(opcode, payload, **kw))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ frames
    def recv_frame(self) -> Frame | None:
        """The next frame from the server, or None when the connection ended."""
        first = self._read(2)
        if first is None:
            return None
        b0, b1 = first
        assert not b1 & 0x80, "a server must not mask its frames (RFC 6455 §5.1)"
        n = b1 & 0x7F
        if n == 126:
            ext = self._read(2)
            assert ext is not None
            n = struct.unpack("!H", ext)[0]
        elif n == 127:
            ext = self._read(8)
            assert ext is not None
            n = struct.unpack("!Q", ext)[0]
        payload = self._read(n) if n else b""
        assert payload is not None, "connection ended inside a frame"
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0xF, payload)

    def recv_message(self) -> tuple[int, bytes]:
        """The next data message (its opcode and whole payload); pings from the server are
        answered on the way; a close frame or the end raises :class:`Closed`. The first
        frame's reserved bits are left in ``last_rsv`` (RSV1: compressed)."""
        opcode, parts = None, []
        while True:
            f = self.recv_frame()
            if f is None or f.opcode == CLOSE:
                raise Closed(f)
            if f.opcode == PING:
                self.send_frame(PONG, f.payload)
                continue
            assert f.opcode != PONG or opcode is None, "pong inside a message"
            if f.opcode == PONG:
                raise AssertionError(f"unexpected pong {f.payload!r}")
            if opcode is None:
                opcode = f.opcode
                self.last_rsv = f.rsv
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)

    def echo(self, opcode: int, payload: bytes) -> bytes:
        """Sends one message and returns the server's answer, checking its opcode."""
        self.send_frame(opcode, payload)
        got, data = self.recv_message()
        assert got == opcode
        return data

    def expect_close(self, reply: bool = True) -> Closed:
        """Reads until the server's close (skipping data messages it sent first), answers it
        (``reply``: when the server began the close), and checks the server then ends the TCP
        connection. Returns what it closed with."""
        while True:
            try:
                self.recv_message()
            except Closed as closed:
                if closed.frame is not None:
                    try:
                        if not reply:
                            raise OSError
                        self.send_frame(CLOSE, closed.frame.payload[:2])
                    except OSError:
                        pass
                    assert self._eof(), "the server did not end the connection after its close"
                return closed

    def _eof(self) -> bool:
        while True:
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except (TimeoutError, socket.timeout):
                return False

    def close(self, code: int = 1000) -> Closed:
        """The client's close handshake: the server's close frame back, then the end."""
        self.send_frame(CLOSE, close_payload(code))
        return self.expect_close(reply=False)

    def shutdown(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def extension_params(header: str | None, name: str = "permessage-deflate") -> dict[str, str] | None:
    """The parameters the server accepted ``name`` with (None: not taken up)."""
    for ext in (header or "").split(","):
        parts = [p.strip() for p in ext.split(";")]
        if parts[0].lower() == name:
            return {k.strip().lower(): v.strip().strip('"') for k, _, v in
                    (p.partition("=") for p in parts[1:] if p)}
    return None


class Deflate:
    """The client's end of permessage-deflate (RFC 7692), on the standard library's zlib:
    ``takeover`` keeps each direction's LZ77 context across messages as negotiated."""

    TAIL = b"\x00\x00\xff\xff"

    def __init__(self, client_bits: int = 15, server_bits: int = 15,
                 client_takeover: bool = True, server_takeover: bool = True) -> None:
        self.client_bits, self.server_bits = client_bits, server_bits
        self.client_takeover, self.server_takeover = client_takeover, server_takeover
        self._c = zlib.compressobj(wbits=-client_bits)
        self._d = zlib.decompressobj(wbits=-server_bits)

    def compress(self, data: bytes) -> bytes:
        out = self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)
        if not self.client_takeover:
            self._c = zlib.compressobj(wbits=-self.client_bits)
        assert out.endswith(self.TAIL)
        return out[:-4]

    def decompress(self, data: bytes) -> bytes:
        out = self._d.decompress(data + self.TAIL)
        if not self.server_takeover:
            self._d = zlib.decompressobj(wbits=-self.server_bits)
        return out


class H2WsClient(WsClient):
    """The same client over HTTP/2 (RFC 8441): TLS with ALPN ``h2``, the server's SETTINGS
    must enable extended CONNECT, and one ``CONNECT`` stream with ``:protocol: websocket``
    carries the frames in its DATA. The ``h2`` package does the HTTP/2 side."""

    def __init__(self, port: int, path: str = "/", *, ctx: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0) -> None:
        import h2.config
        import h2.connection

        assert ctx is not None, "HTTP/2 WebSockets are tested over TLS (ALPN h2)"
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.buf = b""
        self.last_rsv = 0
        self.ended = False
        self.status = 0
        self.headers = {}
        self.connect_enabled: bool | None = None
        self.h2 = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self._flush()
        while self.connect_enabled is None:
            if not self._pump():
                raise ConnectionError("connection ended before the server's SETTINGS")
        self.sid = self.h2.get_next_available_stream_id()
        if not self.connect_enabled:
            return  # the server does not offer WebSockets over HTTP/2: status stays 0
        fields = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                  (":path", path), (":authority", f"localhost:{port}"),
                  ("sec-websocket-version", "13")]
        fields += [(k.lower(), v) for k, v in (headers or {}).items()]
        self.h2.send_headers(self.sid, fields, end_stream=False)
        self._flush()
        while not self.status:
            if not self._pump():
                raise ConnectionError("connection ended before the response")

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def _pump(self) -> bool:
        """Reads once and handles the events; False when the connection ended."""
        import h2.events

        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.ended = True
            return False
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                if self.connect_enabled is None:
                    self.connect_enabled = bool(self.h2.remote_settings.enable_connect_protocol)
            elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == self.sid:
                fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                self.status = int(fields.pop(":status"))
                self.headers = fields
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == self.sid:
                self.buf += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, self.sid)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and \
                    getattr(event, "stream_id", None) == self.sid:
                self.ended = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.ended = True
        self._flush()
        return True

    def _fill(self) -> bool:
        before = len(self.buf)
        while len(self.buf) == before:
            if self.ended or not self._pump():
                return len(self.buf) > before
        return True

    def send_raw(self, data: bytes) -> None:
        import h2.exceptions

        view = memoryview(data)
        while view:
            try:
                room = min(self.h2.local_flow_control_window(self.sid),
                           self.h2.max_outbound_frame_size, len(view))
            except h2.exceptions.StreamClosedError:
                raise BrokenPipeError("the stream is closed") from None
            if room <= 0:
                if not self._pump():
                    raise BrokenPipeError("the connection ended")
                continue
            try:
                self.h2.send_data(self.sid, bytes(view[:room]))
            except h2.exceptions.StreamClosedError:
                raise BrokenPipeError("the stream is closed") from None
            view = view[room:]
            self._flush()

    def _eof(self) -> bool:
        try:
            while not self.ended:
                if not self._pump():
                    break
        except (TimeoutError, socket.timeout):
            return False
        return True
