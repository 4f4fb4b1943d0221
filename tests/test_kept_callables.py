"""A thread reuses its ``start_response`` object and methods for the next request only when
nothing else holds them: callables an app keeps from one request reach that request, never a
later one, on app threads and (once the route runs inline) on the I/O thread alike."""

from __future__ import annotations

import json

import pytest

from support import RawConn, Server, http_request


def exchange(server: Server, conn: RawConn, path: str) -> list:
    conn.send(http_request(path))
    out = [conn.response(skip_interim=False)]
    while out[-1].status < 200:
        out.append(conn.response(skip_interim=False))
    return out


@pytest.mark.parametrize("keep", ["/keep", "/weak"])
def test_kept_callables_never_reach_a_later_request(start_server, keep: str) -> None:
    server = start_server("kept_callables:app", "-w", "1", "--threads", "1")
    with server.connect() as conn:
        # Enough rounds for the routes to be proven fast and run inline on the I/O thread.
        for _ in range(25):
            (kept,) = exchange(server, conn, keep)
            assert kept.status == 200 and kept.body == b"kept"
            responses = exchange(server, conn, "/stale")
            assert len(responses) == 1, "a kept early_hints sent a 103 to a later request"
            (final,) = responses
            assert final.status == 200, final.raw[:200]
            results = json.loads(final.body)
            if keep == "/keep":
                assert results["alive"]
                # Its own request is over: the hint is ignored, start_response refuses a second
                # call, and write() fails or goes nowhere; none of them touch this response.
                assert results["hints"] == "ok"
                assert results["start_response"] == "RuntimeError"
                assert results["write"] in ("ok", "OSError")
            else:
                # Nothing but the weak references held them: they are gone, not reused.
                assert results == {"alive": False}
    assert server.assert_serving("/keep").status == 200
