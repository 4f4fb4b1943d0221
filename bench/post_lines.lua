-- POST a 64 KiB body of 1,024 text lines of 64 bytes (read by apps/body_reads.py).
wrk.method = "POST"
wrk.body = string.rep(string.rep("l", 63) .. "\n", 1024)
wrk.headers["Content-Type"] = "text/plain"
