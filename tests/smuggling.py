"""A differential harness for request smuggling: known attack requests and seeded mutants of
them, sent through a real nginx to a backend and straight to the backend.

Used by tests/test_smuggling.py (against ferrocorn) and bench/smuggling.py (against ferrocorn,
Gunicorn and Granian); it needs only the standard library and an ``nginx`` binary.

The backend serves tests/apps/smuggle_app.py, which appends one record per request it is
called for (the ``X-Request-Id`` nginx tagged it with, method, path, query, body) to a file per
worker in a folder this harness reads.

Through nginx (:meth:`Harness.run_nginx`): nginx has an upstream keepalive pool of one
connection (HTTP/1.1, ``Connection: ""``), so consecutive requests, and anything smuggled,
share one upstream connection. It tags every request it forwards with ``$request_id`` and logs
it (id, method, URI, status, upstream address and status, decoded body) as JSON. Each case is
sent on a fresh client connection which is then half-closed; the harness reads until nginx
closes it, then sends a *sentinel* request through nginx on a new connection (it reuses the
pooled upstream connection, so a smuggled prefix waiting there would swallow it or be
completed by it). The verdict: the app saw exactly the requests nginx forwarded, in nginx's
order, each once, with nginx's id, method, path, query and body; a record without an id, with
an id nginx did not log, a repeated id, or different contents is a *mismatch*. A forwarded
request the backend refused (nginx logged a 4xx/5xx upstream status) is counted, not a
mismatch. A record arriving after its case was judged is checked against nginx's entry for it.

Directly (:meth:`Harness.run_direct`): the same bytes go straight to the backend; the
connection is half-closed once the responses the backend may give have come (or after
:data:`SETTLE_TIMEOUT`). :func:`read_requests`, a strict RFC 9112 reader, says which requests
the bytes hold before the first framing it cannot read one way only. The backend may serve
those requests (same method, path and body, in order), plus the request it stopped at (a
lenient server may read that one), and nothing more: a request beyond that, or one whose method
and path are not the next expected, came out of another request's body. Where the reading
stops at bytes that cannot be read one way, the backend must say so with a 4xx (or have
announced ``Connection: close`` before).

Every loop here is bounded in count and time; waiting is polling with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import support.nginx
from support.net import free_port
from support.nginx import NGINX
from support.server import APPS_DIR
from support.wait import poll

HOST = "127.0.0.1"

#: The ids of the requests this harness sends straight to the backend after each case.
OWN_SENTINELS = ("direct-sentinel-", "sweep-sentinel-")
#: How long one case may take to be answered and closed, on either path.
CASE_TIMEOUT = 8.0
#: How long the records of a case's forwarded requests may take to show up.
RECORD_TIMEOUT = 5.0
#: How often they are looked for (cases are many and each settles in milliseconds).
POLL_INTERVAL = 0.003




# ------------------------------------------------------------------------------ cases

@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    #: The known case a mutant was made from ("" for a known case).
    parent: str = ""


HOST_LINE = b"Host: app.example\r\n"
#: A whole request hidden in a body: served by a backend only if it read the framing otherwise.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + HOST_LINE + b"\r\n"
#: A request's beginning hidden in a body, completed by whatever comes next on the connection.
SMUGGLED_PREFIX = b"GET /smuggled-prefix HTTP/1.1\r\nX-Swallow: "


def _follow(name: str) -> bytes:
    """A plain request pipelined after an attack (a smuggled prefix would swallow it)."""
    return b"GET /c/" + name.encode() + b"/next HTTP/1.1\r\n" + HOST_LINE + b"\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _post(name: str, headers: bytes, body: bytes, follow: bool = True,
          method: bytes = b"POST", version: bytes = b"HTTP/1.1") -> Case:
    head = method + b" /c/" + name.encode() + b" " + version + b"\r\n" + HOST_LINE + headers
    return Case(name, head + b"\r\n" + body + (_follow(name) if follow else b""))


def _te_variants() -> list[tuple[str, bytes]]:
    """Transfer-Encoding lines a parser may or may not read as ``chunked``."""
    return [
        ("plain", b"Transfer-Encoding: chunked\r\n"),
        ("space-before-colon", b"Transfer-Encoding : chunked\r\n"),
        ("tab-before-colon", b"Transfer-Encoding\t: chunked\r\n"),
        ("xchunked", b"Transfer-Encoding: xchunked\r\n"),
        ("chunked-x", b"Transfer-Encoding: chunkedx\r\n"),
        ("chunked-identity", b"Transfer-Encoding: chunked, identity\r\n"),
        ("identity-chunked", b"Transfer-Encoding: identity, chunked\r\n"),
        ("gzip-chunked", b"Transfer-Encoding: gzip, chunked\r\n"),
        ("tab-value", b"Transfer-Encoding:\tchunked\r\n"),
        ("vtab-value", b"Transfer-Encoding:\x0bchunked\r\n"),
        ("ff-value", b"Transfer-Encoding:\x0cchunked\r\n"),
        ("vtab-after", b"Transfer-Encoding: chunked\x0b\r\n"),
        ("no-space", b"Transfer-Encoding:chunked\r\n"),
        ("mixed-case", b"tRaNsFeR-eNcOdInG: ChUnKeD\r\n"),
        ("quoted", b'Transfer-Encoding: "chunked"\r\n'),
        ("duplicated", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ("dup-x-first", b"Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n"),
        ("dup-x-last", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n"),
        ("dup-identity", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
        ("underscore", b"Transfer_Encoding: chunked\r\n"),
        ("space-in-name", b"Transfer Encoding: chunked\r\n"),
        ("obs-fold-value", b"Transfer-Encoding:\r\n chunked\r\n"),
        ("folded-into-other", b"X-Pad: a\r\n Transfer-Encoding: chunked\r\n"),
        ("bare-lf-before", b"X-Pad: a\nTransfer-Encoding: chunked\r\n"),
        ("bare-cr-before", b"X-Pad: a\rTransfer-Encoding: chunked\r\n"),
        ("bare-lf-after", b"Transfer-Encoding: chunked\n"),
        ("nul-in-value", b"Transfer-Encoding: chunked\x00\r\n"),
        ("obs-text", b"Transfer-Encoding: \xffchunked\r\n"),
        ("comma-empty", b"Transfer-Encoding: , chunked\r\n"),
    ]


def known_cases() -> list[Case]:
    """The hand-made attack requests (each usually followed by a plain pipelined request)."""
    cases: list[Case] = []
    add = cases.append

    # CL.TE and TE.CL, with every Transfer-Encoding spelling.
    for label, te in _te_variants():
        # CL.TE: Content-Length covers all; chunked ends early and leaves a request behind.
        body = b"0\r\n\r\n" + SMUGGLED
        add(_post(f"clte-{label}", b"Content-Length: %d\r\n" % len(body) + te, body))
        body = b"0\r\n\r\n" + SMUGGLED_PREFIX
        add(_post(f"clte-prefix-{label}", b"Content-Length: %d\r\n" % len(body) + te, body))
        # TE.CL: the chunk holds a request; Content-Length ends inside the chunk-size line.
        body = _chunk(SMUGGLED) + b"0\r\n\r\n"
        add(_post(f"tecl-{label}", te + b"Content-Length: 3\r\n", body))
        # TE alone: a parser that does not see chunked reads no body and the chunks as requests.
        body = _chunk(b"x=1") + b"0\r\n\r\n"
        add(_post(f"te-only-{label}", te, body))

    # Content-Length: duplicated, conflicting, malformed.
    for label, lines in [
        ("dup-differ", b"Content-Length: 0\r\nContent-Length: %d\r\n"),
        ("dup-differ-rev", b"Content-Length: %d\r\nContent-Length: 0\r\n"),
        ("list-differ", b"Content-Length: 0, %d\r\n"),
        ("dup-same", b"Content-Length: %d\r\nContent-Length: %d\r\n"),
        ("list-same", b"Content-Length: %d, %d\r\n"),
        ("plus", b"Content-Length: +%d\r\n"),
        ("minus", b"Content-Length: -%d\r\n"),
        ("hex", b"Content-Length: 0x%x\r\n"),
        ("leading-zeros", b"Content-Length: 000%d\r\n"),
        ("trailing-junk", b"Content-Length: %dabc\r\n"),
        ("space-inside", b"Content-Length: 1 %d\r\n"),
        ("space-before-colon", b"Content-Length : %d\r\n"),
        ("underscore", b"Content_Length: %d\r\n"),
        ("space-in-name", b"Content Length: %d\r\n"),
        ("vtab", b"Content-Length:\x0b%d\r\n"),
        ("nul", b"Content-Length: %d\x00\r\n"),
        ("obs-fold", b"Content-Length:\r\n %d\r\n"),
        ("bare-lf", b"X-Pad: a\nContent-Length: %d\r\n"),
        ("bare-cr", b"X-Pad: a\rContent-Length: %d\r\n"),
        ("overflow", b"Content-Length: 1844674407370955161%d\r\n"),
        ("empty-then", b"Content-Length:\r\nContent-Length: %d\r\n"),
    ]:
        n = len(SMUGGLED)
        headers = lines.replace(b"%d", b"%d" % n).replace(b"%x", b"%x" % n)
        add(_post(f"cl-{label}", headers, SMUGGLED))
    add(_post("cl-and-te-chunked-first", b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
              _chunk(SMUGGLED) + b"0\r\n\r\n"))

    # Chunk sizes and extensions.
    add(_post("chunk-ext-token", b"Transfer-Encoding: chunked\r\n",
              b"3;name=value\r\nabc\r\n0\r\n\r\n"))
    add(_post("chunk-ext-quoted-crlf", b"Transfer-Encoding: chunked\r\n",
              b'3;name="a\r\n0\r\n\r\n' + SMUGGLED + b'"\r\nabc\r\n0\r\n\r\n'))
    add(_post("chunk-ext-quoted-lf", b"Transfer-Encoding: chunked\r\n",
              b'3;name="a\n0\r\n\r\n' + SMUGGLED + b'"\r\nabc\r\n0\r\n\r\n'))
    add(_post("chunk-ext-bare-lf", b"Transfer-Encoding: chunked\r\n",
              b"3;a\nb\r\nabc\r\n0\r\n\r\n"))
    add(_post("chunk-ext-empty", b"Transfer-Encoding: chunked\r\n", b"3;\r\nabc\r\n0\r\n\r\n"))
    add(_post("chunk-ext-bws", b"Transfer-Encoding: chunked\r\n",
              b"3 ; a = b\r\nabc\r\n0\r\n\r\n"))
    add(_post("chunk-ext-long", b"Transfer-Encoding: chunked\r\n",
              b"3;" + b"a" * 20000 + b"\r\nabc\r\n0\r\n\r\n"))
    add(_post("chunk-ext-last-chunk-bare-lf", b"Transfer-Encoding: chunked\r\n",
              b"0;a\n\r\n" + SMUGGLED))
    smuggled_chunk = b"0\r\n\r\n" + SMUGGLED
    for label, size in [
        ("overflow-64", b"1" + b"0" * 16 + b"%x"),
        ("overflow-64-zero", b"1" + b"0" * 16),
        ("overflow-32", b"1" + b"0" * 8 + b"%x"),
        ("leading-zeros", b"0000000000000000000%x"),
        ("0x", b"0x%x"),
        ("plus", b"+%x"),
        ("minus", b"-%x"),
        ("space-before", b" %x"),
        ("space-after", b"%x "),
        ("tab-after", b"%x\t"),
        ("nul-after", b"%x\x00"),
        ("underscore", b"%x_"),
        ("upper", b"%X"),
    ]:
        size_line = size.replace(b"%x", b"%x" % len(smuggled_chunk)).replace(
            b"%X", b"%X" % len(smuggled_chunk))
        add(_post(f"chunk-size-{label}", b"Transfer-Encoding: chunked\r\n",
                  size_line + b"\r\n" + smuggled_chunk + b"\r\n0\r\n\r\n"))
    add(_post("chunk-data-too-long", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabcdef\r\n0\r\n\r\n"))
    add(_post("chunk-data-lf-only", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabc\n0\r\n\r\n" + SMUGGLED))
    add(_post("chunk-size-lf-only", b"Transfer-Encoding: chunked\r\n",
              b"3\nabc\r\n0\r\n\r\n"))
    add(_post("chunk-last-lf-only", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabc\r\n0\n\n" + SMUGGLED))
    add(_post("chunk-last-cr-only", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabc\r\n0\r\r" + SMUGGLED))
    add(_post("trailer-content-length", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabc\r\n0\r\nContent-Length: 45\r\n\r\n"))
    add(_post("trailer-te", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"))
    add(_post("trailer-obs-fold", b"Transfer-Encoding: chunked\r\n",
              b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n"))
    add(_post("truncated-chunked", b"Transfer-Encoding: chunked\r\n", b"10\r\nabc",
              follow=False))

    # Bare CR / bare LF in the head.
    add(Case("bare-lf-request-line", b"GET /c/bare-lf-request-line HTTP/1.1\n" + HOST_LINE
             + b"\r\n" + _follow("bare-lf-request-line")))
    add(Case("bare-lf-head-end", b"GET /c/bare-lf-head-end HTTP/1.1\r\n" + HOST_LINE
             + b"\n" + _follow("bare-lf-head-end")))
    add(Case("bare-lf-all", b"POST /c/bare-lf-all HTTP/1.1\nHost: app.example\n"
             b"Content-Length: %d\n\n" % len(SMUGGLED) + SMUGGLED))
    add(Case("bare-cr-request-line", b"GET /c/bare-cr-request-line HTTP/1.1\r" + HOST_LINE
             + b"\r\n" + _follow("bare-cr-request-line")))
    add(Case("bare-cr-in-value", b"GET /c/bare-cr-in-value HTTP/1.1\r\n" + HOST_LINE
             + b"X-A: a\rb\r\n\r\n" + _follow("bare-cr-in-value")))
    add(Case("leading-empty-lines", b"\r\n\r\n\r\nGET /c/leading-empty-lines HTTP/1.1\r\n"
             + HOST_LINE + b"\r\n" + _follow("leading-empty-lines")))
    add(Case("leading-bare-lf", b"\nGET /c/leading-bare-lf HTTP/1.1\r\n" + HOST_LINE + b"\r\n"
             + _follow("leading-bare-lf")))

    # Header names and obs-fold.
    add(Case("obs-fold-host", b"GET /c/obs-fold-host HTTP/1.1\r\nHost: app.example\r\n"
             b" X-Extra: 1\r\n\r\n" + _follow("obs-fold-host")))
    add(Case("space-before-first-header", b"GET /c/space-before-first-header HTTP/1.1\r\n"
             b" Content-Length: 45\r\n" + HOST_LINE + b"\r\n" + SMUGGLED))
    add(Case("underscore-names", b"GET /c/underscore-names HTTP/1.1\r\n" + HOST_LINE
             + b"X_Forwarded_For: 6.6.6.6\r\nX_Request_Id: forged\r\n\r\n"
             + _follow("underscore-names")))
    add(Case("forged-request-id", b"GET /c/forged-request-id HTTP/1.1\r\n" + HOST_LINE
             + b"X-Request-Id: forged\r\n\r\n" + _follow("forged-request-id")))
    add(Case("duplicate-host", b"GET /c/duplicate-host HTTP/1.1\r\n" + HOST_LINE
             + b"Host: other.example\r\n\r\n" + _follow("duplicate-host")))
    add(_post("duplicate-content-type", b"Content-Type: text/plain\r\nContent-Type: a/b\r\n"
              b"Content-Length: 3\r\n", b"abc"))
    add(Case("nul-in-target", b"GET /c/nul\x00-in-target HTTP/1.1\r\n" + HOST_LINE + b"\r\n"
             + _follow("nul-in-target")))
    add(Case("nul-in-name", b"GET /c/nul-in-name HTTP/1.1\r\n" + HOST_LINE
             + b"X-A\x00b: c\r\n\r\n" + _follow("nul-in-name")))
    add(_post("nul-in-body", b"Content-Length: 5\r\n", b"a\x00b\x00c"))

    # Targets.
    add(Case("absolute-form", b"GET http://app.example/c/absolute-form?q=1 HTTP/1.1\r\n"
             + HOST_LINE + b"\r\n" + _follow("absolute-form")))
    add(Case("absolute-form-other-host", b"GET http://evil.example/c/absolute-form-other-host "
             b"HTTP/1.1\r\n" + HOST_LINE + b"\r\n" + _follow("absolute-form-other-host")))
    add(Case("absolute-form-https", b"GET https://app.example/c/absolute-form-https HTTP/1.1\r\n"
             + HOST_LINE + b"\r\n" + _follow("absolute-form-https")))
    add(Case("absolute-form-userinfo", b"GET http://u@app.example/c/absolute-form-userinfo "
             b"HTTP/1.1\r\n" + HOST_LINE + b"\r\n" + _follow("absolute-form-userinfo")))
    add(Case("target-space", b"GET /c/target space HTTP/1.1\r\n" + HOST_LINE + b"\r\n"
             + _follow("target-space")))
    add(Case("target-smuggled-version", b"GET /c/target-smuggled-version HTTP/1.1 HTTP/1.1\r\n"
             + HOST_LINE + b"\r\n" + _follow("target-smuggled-version")))

    # Hop-by-hop tricks: a proxy that drops what Connection names would strip the framing.
    add(_post("connection-names-cl", b"Connection: keep-alive, Content-Length\r\n"
              b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED))
    add(_post("connection-names-te", b"Connection: Transfer-Encoding\r\n"
              b"Transfer-Encoding: chunked\r\n", _chunk(SMUGGLED) + b"0\r\n\r\n"))
    add(Case("upgrade-h2c", b"GET /c/upgrade-h2c HTTP/1.1\r\n" + HOST_LINE
             + b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
             b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + _follow("upgrade-h2c")))
    add(Case("upgrade-websocket", b"GET /c/upgrade-websocket HTTP/1.1\r\n" + HOST_LINE
             + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
             + _follow("upgrade-websocket")))
    add(Case("reqline-tabs", b"GET\t/c/reqline-tabs\tHTTP/1.1\r\n" + HOST_LINE + b"\r\n"
             + _follow("reqline-tabs")))
    add(Case("reqline-double-space", b"GET  /c/reqline-double-space HTTP/1.1\r\n" + HOST_LINE
             + b"\r\n" + _follow("reqline-double-space")))
    add(Case("absolute-form-no-host", b"GET http://app.example/c/absolute-form-no-host "
             b"HTTP/1.1\r\n\r\n" + _follow("absolute-form-no-host")))

    # Expect: 100-continue.
    add(_post("expect-body-sent", b"Expect: 100-continue\r\nContent-Length: %d\r\n"
              % len(SMUGGLED), SMUGGLED))
    add(_post("expect-no-body-get", b"Expect: 100-continue\r\n", b"", method=b"GET"))
    add(_post("expect-unknown", b"Expect: 100-continuex\r\nContent-Length: %d\r\n"
              % len(SMUGGLED), SMUGGLED))
    add(_post("expect-chunked", b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
              _chunk(SMUGGLED) + b"0\r\n\r\n"))

    # Pipelined pairs and connection handling.
    add(Case("pipelined-gets", b"GET /c/pipelined-gets HTTP/1.1\r\n" + HOST_LINE + b"\r\n"
             + _follow("pipelined-gets")))
    add(_post("pipelined-post-cl", b"Content-Length: 3\r\n", b"abc"))
    add(_post("pipelined-post-chunked", b"Transfer-Encoding: chunked\r\n",
              _chunk(b"abc") + _chunk(SMUGGLED) + b"0\r\n\r\n"))
    add(_post("get-with-body", b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED,
              method=b"GET"))
    add(_post("head-with-body", b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED,
              method=b"HEAD"))
    add(_post("connection-close-then-more", b"Connection: close\r\nContent-Length: 3\r\n",
              b"abc"))
    add(_post("http10-te", b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n",
              b"0\r\n\r\n" + SMUGGLED, version=b"HTTP/1.0"))
    add(_post("http10-keepalive-cl", b"Connection: keep-alive\r\nContent-Length: 3\r\n", b"abc",
              version=b"HTTP/1.0"))
    add(_post("http10-no-keepalive", b"Content-Length: 3\r\n", b"abc", version=b"HTTP/1.0"))
    return cases


# ---------------------------------------------------------------------------- mutants

#: Bytes an insertion or replacement draws from: what parsers disagree about.
_NOISE = [b" ", b"\t", b"\r", b"\n", b"\x00", b"\x0b", b"\x0c", b",", b";", b"0", b"1",
          b"a", b"f", b"x", b'"', b"_", b"-", b":", b"\r\n", b"\xff"]
_FRAMING_WORDS = (b"content-length", b"transfer-encoding", b"transfer_encoding",
                  b"content_length", b"transfer encoding", b"content length", b"expect")


def framing_offsets(data: bytes) -> list[int]:
    """Offsets where a change alters framing: line ends, the framing header lines, and the
    chunk-size lines of a chunked body (not request lines or the bodies' contents)."""
    offsets: set[int] = set()
    for m in re.finditer(rb"[\r\n]", data):
        offsets.add(m.start())
    for m in re.finditer(rb"[^\r\n]*(?:\r\n|\n|\r|$)", data):
        line = m.group(0)
        if not line:
            break
        lower = line.lower().lstrip(b" \t")
        if lower.startswith(_FRAMING_WORDS) or re.match(rb"[0-9a-fA-F+\- ]{1,24}(?:[;\r\n]|$)",
                                                        line):
            offsets.update(range(m.start(), m.end()))
    return sorted(o for o in offsets if o < len(data))


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation at a framing offset; returns the new bytes and what was done."""
    offsets = framing_offsets(data) or list(range(len(data)))
    at = rng.choice(offsets)
    op = rng.choice(["insert", "delete", "duplicate", "replace", "case", "crlf", "digit",
                     "dup-line"])
    if op == "insert":
        noise = rng.choice(_NOISE)
        return data[:at] + noise + data[at:], f"ins{at}:{noise!r}"
    if op == "delete":
        return data[:at] + data[at + 1:], f"del{at}"
    if op == "duplicate":
        return data[:at + 1] + data[at:], f"dup{at}"
    if op == "replace":
        noise = rng.choice(_NOISE)
        return data[:at] + noise + data[at + 1:], f"rep{at}:{noise!r}"
    if op == "case":
        ch = data[at:at + 1]
        return data[:at] + ch.swapcase() + data[at + 1:], f"case{at}"
    if op == "digit":
        digits = [i for i in offsets if data[i:i + 1].isdigit()] or [at]
        at = rng.choice(digits)
        new = rng.choice(b"0123456789abcdefF").to_bytes(1, "big")
        return data[:at] + new + data[at + 1:], f"digit{at}:{new!r}"
    if op == "dup-line":
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        end = len(data) if end < 0 else end + 1
        return data[:end] + data[start:end] + data[end:], f"dupline{start}"
    # crlf: swap one line end for another spelling
    ends = [m.start() for m in re.finditer(rb"\r\n", data)] or [at]
    at = rng.choice(ends)
    new = rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n ", b"\r\n\t", b"\r\n\r\n"])
    return data[:at] + new + data[at + 2:], f"crlf{at}:{new!r}"


def mutants(parents: list[Case], count: int, seed: int = 21) -> list[Case]:
    """``count`` distinct mutants (one or two mutations each) of ``parents``, reproducibly."""
    rng = random.Random(seed)
    seen = {c.data for c in parents}
    out: list[Case] = []
    for _ in range(count * 20):
        if len(out) >= count:
            break
        parent = rng.choice(parents)
        data, what = mutate(parent.data, rng)
        if rng.random() < 0.3:
            data, what2 = mutate(data, rng)
            what += "+" + what2
        if data in seen:
            continue
        seen.add(data)
        out.append(Case(f"mut{len(out):03d}-{parent.name}-{what}", data, parent.name))
    return out


# ---------------------------------------------------------------- the strict reader

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _is_token(b: bytes) -> bool:
    return bool(b) and all(c in _TCHAR for c in b)


def _value_ok(b: bytes) -> bool:
    return all(c == 9 or 32 <= c <= 126 or c >= 128 for c in b)


@dataclass
class Req:
    method: str
    path: str
    query: str
    body: bytes


@dataclass
class Reading:
    """What :func:`read_requests` found: whole requests, then why it stopped."""
    requests: list[Req]
    #: (method, path) of the request it stopped in, when that one's request line was readable.
    tail: tuple[str, str] | None
    stop: str

    def allowed(self) -> list[tuple[str, str]]:
        out = [(r.method, r.path) for r in self.requests]
        return out + ([self.tail] if self.tail else [])


class _Stop(Exception):
    pass


def _split_target(target: str) -> tuple[str, str]:
    if target.lower().startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path, _, query = target.partition("?")
    return unquote_to_bytes(path).decode("latin-1"), query


def _loose_request_line(data: bytes, pos: int) -> tuple[str, str] | None:
    while data.startswith((b"\r", b"\n"), pos):
        pos += 1
    m = re.match(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+)", data[pos:pos + 8192])
    if not m:
        return None
    return m.group(1).decode(), _split_target(m.group(2).decode("latin-1"))[0]


def _fields(data: bytes, pos: int, end: int) -> list[tuple[bytes, bytes]]:
    """Field lines of data[pos:end] (each ending in CRLF), strictly."""
    out = []
    for line in data[pos:end].split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            raise _Stop("obs-fold")
        name, sep, value = line.partition(b":")
        if not sep or not _is_token(name):
            raise _Stop(f"bad field name {name[:40]!r}")
        value = value.strip(b" \t")
        if not _value_ok(value):
            raise _Stop(f"bad field value {value[:40]!r}")
        out.append((name.lower(), value))
    return out


def _chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    for _ in range(10_000):
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            if b"\n" in data[pos:pos + 1024] or b"\r" in data[pos:pos + 1024]:
                raise _Stop("bare CR/LF in chunk-size line")
            raise _Stop("incomplete")
        line = data[pos:eol]
        if b"\n" in line or b"\r" in line:
            raise _Stop("bare CR/LF in chunk-size line")
        m = re.fullmatch(rb"([0-9a-fA-F]+)((?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
                         rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"
                         rb"\"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*\""
                         rb"))?)*)", line)
        if not m or len(m.group(1).lstrip(b"0")) > 15:
            raise _Stop(f"bad chunk-size line {line[:40]!r}")
        size = int(m.group(1), 16)
        pos = eol + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                raise _Stop("incomplete")
            _fields(data, pos, end + 2)  # trailer fields are read and dropped
            tail = data[pos:end + 2]
            if b"\n" in tail.replace(b"\r\n", b"") or b"\r" in tail.replace(b"\r\n", b""):
                raise _Stop("bare CR/LF in trailers")
            return bytes(body), end + 4
        if len(data) < pos + size + 2:
            raise _Stop("incomplete")
        body += data[pos:pos + size]
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise _Stop("chunk data not followed by CRLF")
        pos += size + 2
    raise _Stop("too many chunks")


def _one(data: bytes, pos: int) -> tuple[Req, int, bool]:
    """One request at ``pos``: it, where the next begins, and whether the connection ends."""
    for _ in range(8):  # empty lines before a request line (RFC 9112 §2.2)
        if data.startswith(b"\r\n", pos):
            pos += 2
    head_end = data.find(b"\r\n\r\n", pos)
    if head_end < 0:
        if b"\n\n" in data[pos:] or b"\r\r" in data[pos:]:
            raise _Stop("bare CR/LF in the head")
        raise _Stop("incomplete")
    head = data[pos:head_end + 2]
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
        raise _Stop("bare CR/LF in the head")
    line_end = head.find(b"\r\n")
    parts = head[:line_end].split(b" ")
    if len(parts) != 3 or not _is_token(parts[0]) or not parts[1] \
            or not all(0x21 <= c <= 0x7e for c in parts[1]) \
            or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise _Stop("bad request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    fields = _fields(head, line_end + 2, len(head))
    names = [n for n, _ in fields]
    if names.count(b"host") > 1 or (version == "HTTP/1.1" and b"host" not in names):
        raise _Stop("Host missing or repeated")
    te = [v for n, v in fields if n == b"transfer-encoding"]
    cl = [v for n, v in fields if n == b"content-length"]
    pos = head_end + 4
    if te:
        # Empty list elements are ignored (RFC 9110 §5.6.1).
        codings = [c.strip(b" \t").lower() for c in b",".join(te).split(b",")
                   if c.strip(b" \t")]
        if codings != [b"chunked"] or cl or version == "HTTP/1.0":
            raise _Stop(f"framing: Transfer-Encoding {b','.join(te)!r}, Content-Length {cl!r}")
        body, pos = _chunked(data, pos)
    elif cl:
        values = {v.strip(b" \t") for v in b",".join(cl).split(b",")}
        if len(values) != 1 or not re.fullmatch(rb"[0-9]{1,15}", next(iter(values))):
            raise _Stop(f"framing: Content-Length {cl!r}")
        n = int(next(iter(values)))
        if len(data) < pos + n:
            raise _Stop("incomplete")
        body, pos = data[pos:pos + n], pos + n
    else:
        body = b""
    conn = b",".join(v for n, v in fields if n == b"connection").lower()
    tokens = {t.strip(b" \t") for t in conn.split(b",")}
    close = b"close" in tokens or (version == "HTTP/1.0" and b"keep-alive" not in tokens)
    path, query = _split_target(target)
    return Req(method, path, query, bytes(body)), pos, close


def read_requests(data: bytes, limit: int = 16) -> Reading:
    """The requests ``data`` holds for a strict RFC 9112 server (CRLF only, no obs-fold, one
    Host, Transfer-Encoding exactly ``chunked`` and never beside Content-Length, one
    Content-Length value), up to the first thing it cannot read one way only."""
    requests: list[Req] = []
    pos = 0
    for _ in range(limit):
        if pos >= len(data) or not data[pos:].strip(b"\r\n"):
            return Reading(requests, None, "end")
        try:
            req, pos, close = _one(data, pos)
        except _Stop as stop:
            return Reading(requests, _loose_request_line(data, pos), str(stop))
        requests.append(req)
        if close:
            return Reading(requests, None, "close")
    return Reading(requests, None, "limit")


# ----------------------------------------------------------------------- the records

class Records:
    """The recording app's files (one per worker), read incrementally."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offsets: dict[Path, int] = {}
        self.all: list[dict[str, Any]] = []

    def read_new(self) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        for path in sorted(self.folder.glob("*.jsonl")):
            with path.open("rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
            whole = data[:data.rfind(b"\n") + 1]
            self.offsets[path] = self.offsets.get(path, 0) + len(whole)
            new.extend(json.loads(line) for line in whole.splitlines() if line)
        new.sort(key=lambda r: r["t"])
        self.all.extend(new)
        return new


# ------------------------------------------------------------------------------ nginx

class Nginx(support.nginx.Nginx):
    """nginx as a foreground child: one worker, an upstream keepalive pool of one connection,
    every request tagged with ``$request_id`` and logged as JSON."""

    def __init__(self, folder: Path, backend_port: int) -> None:
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        self.access = folder / "logs" / "access.log"
        self.access.touch()
        self.offset = 0
        super().__init__(folder, lambda port: f"""
            log_format smuggle escape=json '{{"id":"$request_id","m":"$request_method",'
                '"u":"$request_uri","s":"$status","up":"$upstream_addr",'
                '"us":"$upstream_status","body":"$request_body"}}';
            access_log {self.access} smuggle;
            client_body_buffer_size 1m;
            client_max_body_size 1m;
            client_body_in_single_buffer on;
            client_header_timeout 5s;
            client_body_timeout 5s;
            keepalive_timeout 5s;
            send_timeout 5s;
            upstream backend {{
                server {HOST}:{backend_port};
                keepalive 1;
                keepalive_timeout 20s;
            }}
            server {{
                listen {HOST}:{port};
                location / {{
                    proxy_pass http://backend;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header Host $host;
                    proxy_set_header X-Request-Id $request_id;
                    proxy_ignore_client_abort on;
                    proxy_connect_timeout 2s;
                    proxy_send_timeout 3s;
                    proxy_read_timeout 3s;
                }}
            }}
        """)

    def read_log(self) -> list[dict[str, Any]]:
        with self.access.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        # escape=json escapes control bytes, '"' and '\'; bytes >= 0x80 are written as they are.
        return [json.loads(line.decode("latin-1")) for line in whole.splitlines() if line]


# ------------------------------------------------------------------------ the runner

_STATUS = re.compile(rb"(?:^|\n)HTTP/1\.[01] (\d{3})")
#: How long :func:`exchange` waits for the responses it expects before it half-closes anyway.
SETTLE_TIMEOUT = 2.0


def exchange(port: int, data: bytes, timeout: float = CASE_TIMEOUT, half_close: bool = True,
             expect: int = 0) -> tuple[list[int], str, bool]:
    """Send ``data`` on a fresh connection and read until the peer closes: the response
    statuses seen, how it ended ("closed", "reset" or "timeout"), and whether a response
    announced the close (``Connection: close``).

    With ``half_close`` the connection is half-closed once ``expect`` final responses have
    come (or the server closed, or :data:`SETTLE_TIMEOUT` passed), so that a server waiting
    for more bytes reads the end instead. Waiting for the expected responses first matters
    for hyper-based servers: they drop requests still in flight when they read the FIN.
    Without ``half_close`` (a request with ``Connection: close``), the server closes."""
    got = bytearray()
    how = "closed"
    deadline = time.monotonic() + timeout
    settle = time.monotonic() + SETTLE_TIMEOUT

    def finals() -> int:
        return sum(1 for m in _STATUS.finditer(got) if not m.group(1).startswith(b"1"))

    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        open_for_writing = True
        try:
            sock.sendall(data)
        except OSError:
            how = "reset"  # refused before everything was sent; what came back still counts
            open_for_writing = False
        while True:
            if half_close and open_for_writing and (finals() >= expect
                                                    or time.monotonic() >= settle):
                open_for_writing = False
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            now = time.monotonic()
            if now >= deadline:
                how = "timeout"
                break
            wait = deadline - now if not open_for_writing or not half_close \
                else max(0.001, settle - now)
            sock.settimeout(wait)
            try:
                piece = sock.recv(65536)
            except (TimeoutError, socket.timeout):
                if open_for_writing and half_close:
                    continue  # the settle deadline: half-close now
                how = "timeout"
                break
            except OSError:
                how = "reset"
                break
            if not piece:
                break
            got += piece
    statuses = [int(m.group(1)) for m in _STATUS.finditer(got)]
    announced = re.search(rb"\r\nconnection:[ \t]*close\r\n", bytes(got).lower()) is not None
    return statuses, how, announced


def _path_query(uri: str) -> tuple[str, str]:
    path, _, query = uri.partition("?")
    return unquote_to_bytes(path).decode("latin-1"), query


@dataclass
class Mismatch:
    case: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.case}: {self.kind}: {self.detail}"


@dataclass
class Tally:
    cases: int = 0
    # through nginx
    refused_by_nginx: int = 0
    forwarded: int = 0
    app_seen: int = 0
    refused_by_backend: int = 0
    extra: int = 0
    wrong: int = 0
    missing: int = 0
    # directly
    direct_cases: int = 0
    direct_refused: int = 0
    direct_served: int = 0
    direct_requests: int = 0
    direct_over: int = 0
    direct_no_close: int = 0
    #: Records that arrived after the case they belong to was judged (checked all the same).
    late: int = 0
    #: Cases where the backend stopped at a framing error without a 4xx/5xx response.
    direct_silent: int = 0
    direct_silent_cases: list[str] = field(default_factory=list)
    #: Cases with a forwarded request the backend answered with an error (through nginx).
    backend_refusals: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    direct_mismatches: list[Mismatch] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Harness:
    """Runs cases against one backend (listening on ``backend_port``, serving smuggle_app with
    ``SMUGGLE_RECORDS`` = ``records``) through ``nginx`` and directly."""
    backend_port: int
    records: Records
    nginx: Nginx | None = None
    tally: Tally = field(default_factory=Tally)
    _sentinels: int = 0
    #: Every request id the app has been called with (a second call is an extra request).
    _seen_ids: set[str] = field(default_factory=set)
    #: Requests nginx forwarded in an earlier case that the app had not been called for when
    #: that case was judged (nginx gave up on a slow backend, say): a record of one of them
    #: arriving later is checked against it, not taken for an extra request.
    _pending: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _late(self, records: list[dict[str, Any]], keep: str | None = None
              ) -> list[dict[str, Any]]:
        """``records`` without the late ones: this harness's own direct sentinels other than
        ``keep``, and requests nginx forwarded in an earlier case (checked here)."""
        out = []
        for rec in records:
            rid = rec["id"]
            if rid != keep and isinstance(rid, str) and rid.startswith(OWN_SENTINELS):
                continue
            entry = self._pending.pop(rid, None) if rid is not None else None
            if entry is None:
                out.append(rec)
                continue
            self._seen_ids.add(rid)
            self.tally.late += 1
            self._compare("(late, from an earlier case)", entry, rec)
        return out

    def _compare(self, case: str, entry: dict[str, Any], rec: dict[str, Any]) -> None:
        path, query = _path_query(entry["u"])
        want = (entry["m"], path, query, entry["body"])
        got = (rec["method"], rec["path"], rec["query"], rec["body"])
        if want != got:
            self.tally.wrong += 1
            self.tally.mismatches.append(Mismatch(
                case, "wrong request", f"nginx forwarded {want!r}, the app saw {got!r}"))

    # -------------------------------------------------------------- through nginx
    def run_nginx(self, case: Case) -> None:
        assert self.nginx is not None
        t = self.tally
        t.cases += 1
        before = len(self.records.all)
        self.records.read_new()
        exchange(self.nginx.port, case.data)
        self._sentinels += 1
        sentinel = b"GET /sentinel/%d HTTP/1.1\r\n" % self._sentinels + HOST_LINE \
            + b"Connection: close\r\n\r\n"
        exchange(self.nginx.port, sentinel, half_close=False)
        entries: list[dict[str, Any]] = []

        def settled() -> bool:
            entries.extend(self.nginx.read_log())
            self.records.read_new()
            seen = {r["id"] for r in self.records.all[before:]}
            sent = [e for e in entries if e["up"] and e["us"].startswith(("1", "2", "3"))]
            return any(e["u"] == f"/sentinel/{self._sentinels}" for e in entries) and \
                all(e["id"] in seen for e in sent)

        poll(settled, RECORD_TIMEOUT, POLL_INTERVAL)
        seen = self._late(self.records.all[before:])
        self._judge_nginx(case, entries, seen)

    def _judge_nginx(self, case: Case, entries: list[dict[str, Any]],
                     seen: list[dict[str, Any]]) -> None:
        t = self.tally
        sentinel_uri = f"/sentinel/{self._sentinels}"
        forwarded = [e for e in entries if e["up"]]
        mine = [e for e in forwarded if e["u"] != sentinel_uri]
        if not mine:
            t.refused_by_nginx += 1
        t.forwarded += len(mine)
        by_id = {e["id"]: e for e in forwarded}
        ids_seen: list[str] = []
        bad = []
        for rec in seen:
            rid = rec["id"]
            entry = by_id.get(rid)
            what = f"{rec['method']} {rec['path']}?{rec['query']} body={rec['body'][:60]!r}"
            if entry is None or rid in self._seen_ids:
                kind = "no id" if rid is None else ("repeated id" if rid in self._seen_ids
                                                    else "id nginx did not forward")
                bad.append(Mismatch(case.name, "extra request", f"{kind}: {what}"))
                t.extra += 1
                continue
            ids_seen.append(rid)
            self._seen_ids.add(rid)
            if entry["u"] != sentinel_uri:
                t.app_seen += 1
            self._compare(case.name, entry, rec)
        order = [e["id"] for e in forwarded if e["id"] in ids_seen]
        if order != ids_seen:
            bad.append(Mismatch(case.name, "out of order", f"{ids_seen} vs nginx {order}"))
            t.wrong += 1
        for e in forwarded:
            if e["id"] in ids_seen:
                continue
            self._pending[e["id"]] = e
            if e["us"][:1] in ("4", "5") or e["s"] in ("502", "504"):
                t.refused_by_backend += 1
                t.backend_refusals.append(f"{case.name} ({e['m']} {e['u']}: {e['us']})")
            else:
                bad.append(Mismatch(case.name, "missing",
                                    f"nginx forwarded {e['m']} {e['u']} (upstream status "
                                    f"{e['us']!r}), the app did not see it"))
                t.missing += 1
        t.mismatches.extend(bad)

    # --------------------------------------------------------------------- directly
    def run_direct(self, case: Case) -> None:
        t = self.tally
        t.direct_cases += 1
        before = len(self.records.all)
        self.records.read_new()
        reading = read_requests(case.data)
        # Half-close once the responses a server may give have come (the request the reading
        # stopped at included, unless it stopped because the bytes ran out).
        expect = len(reading.requests) + (reading.stop != "incomplete" and reading.tail is not None)
        statuses, how, announced = exchange(self.backend_port, case.data, expect=expect)
        if how == "timeout":
            t.direct_no_close += 1
        self._sentinels += 1
        sid = f"{OWN_SENTINELS[0]}{self._sentinels}"
        exchange(self.backend_port, b"GET /sentinel HTTP/1.1\r\n" + HOST_LINE
                 + b"X-Request-Id: " + sid.encode() + b"\r\nConnection: close\r\n\r\n",
                 half_close=False)

        def settled() -> bool:
            self.records.read_new()
            return any(r["id"] == sid for r in self.records.all[before:])

        poll(settled, RECORD_TIMEOUT, POLL_INTERVAL)
        served = [r for r in self._late(self.records.all[before:], keep=sid) if r["id"] != sid]
        allowed = reading.allowed()
        if not served:
            t.direct_refused += 1
        else:
            t.direct_served += 1
        t.direct_requests += len(served)
        problems = []
        if len(served) > len(allowed):
            problems.append(f"served {len(served)} requests, the bytes hold {len(allowed)}")
        for i, rec in enumerate(served[:len(allowed)]):
            if (rec["method"], rec["path"]) != allowed[i]:
                problems.append(f"request {i + 1} is {rec['method']} {rec['path']}, "
                                f"expected {allowed[i][0]} {allowed[i][1]}")
            elif i < len(reading.requests) and rec["body"].encode("latin-1") != \
                    reading.requests[i].body and not rec["error"]:
                problems.append(f"request {i + 1} body {rec['body'][:60]!r}, expected "
                                f"{reading.requests[i].body[:60]!r}")
        # Stopping at bytes it cannot read must be said (a 4xx), unless the server had
        # announced the close before it got there (Gunicorn's sync worker: one request).
        stopped = reading.stop not in ("end", "close", "limit", "incomplete")
        if stopped and len(served) <= len(reading.requests) \
                and not any(s >= 400 for s in statuses) and not announced:
            t.direct_silent += 1
            t.direct_silent_cases.append(f"{case.name} (statuses {statuses}, {how})")
        if problems:
            t.direct_over += 1
            got = [f"{r['method']} {r['path']}" for r in served]
            t.direct_mismatches.append(Mismatch(
                case.name, "direct", "; ".join(problems)
                + f" (served {got}; strict reading stops at: {reading.stop})"))

    # ------------------------------------------------------------------------ both
    def run(self, cases: Iterable[Case], budget: float, direct: bool = True) -> Tally:
        """Every case through nginx (when there is one) and directly, within ``budget``
        seconds (cases left when it runs out are not run: ``tally.cases`` says how many)."""
        start = time.monotonic()
        for case in cases:
            if time.monotonic() - start > budget:
                break
            if self.nginx is not None:
                self.run_nginx(case)
            if direct:
                self.run_direct(case)
        self.sweep()
        self.tally.seconds += time.monotonic() - start
        return self.tally

    def sweep(self) -> None:
        """After the last case: one more sentinel straight to the backend; any record but
        its own that shows up first is a request nobody accounted for."""
        before = len(self.records.all)
        self.records.read_new()
        self._sentinels += 1
        sid = f"{OWN_SENTINELS[1]}{self._sentinels}"
        exchange(self.backend_port, b"GET /sentinel HTTP/1.1\r\n" + HOST_LINE
                 + b"X-Request-Id: " + sid.encode() + b"\r\nConnection: close\r\n\r\n",
                 half_close=False)
        poll(lambda: self.records.read_new() is not None
             and any(r["id"] == sid for r in self.records.all[before:]), RECORD_TIMEOUT,
             POLL_INTERVAL)
        for rec in self._late(self.records.all[before:], keep=sid):
            if rec["id"] != sid:
                self.tally.extra += 1
                self.tally.mismatches.append(Mismatch(
                    "(after the last case)", "extra request",
                    f"{rec['method']} {rec['path']} id={rec['id']}"))


def summary_row(name: str, t: Tally) -> str:
    return (f"| {name} | {t.cases} | {t.refused_by_nginx} | {t.forwarded} | {t.app_seen} | "
            f"{t.refused_by_backend} | {t.extra} | {t.wrong + t.missing} | "
            f"{t.direct_refused} | {t.direct_served} | {t.direct_requests} | "
            f"{t.direct_over} | {t.direct_silent} | {t.seconds:.0f} s |")


SUMMARY_HEAD = (
    "| server | cases | refused by nginx | forwarded | app saw | refused by backend | "
    "extra requests | wrong/missing | direct: refused | direct: served | direct: requests "
    "| direct: beyond the strict reading | direct: stopped without 4xx/5xx | time |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


@contextlib.contextmanager
def nginx_in_front(folder: Path, backend_port: int):
    n = Nginx(folder, backend_port)
    try:
        yield n
    finally:
        n.stop()


def record_env(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"SMUGGLE_RECORDS": str(folder)}


__all__ = ["Case", "Harness", "Nginx", "Records", "Reading", "Tally", "known_cases",
           "mutants", "read_requests", "nginx_in_front", "record_env", "summary_row",
           "SUMMARY_HEAD", "APPS_DIR", "NGINX", "free_port", "poll"]
