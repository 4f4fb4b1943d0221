-- POST a 64 KiB body (echoed back by apps/echo.py).
wrk.method = "POST"
wrk.body = string.rep("a", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
