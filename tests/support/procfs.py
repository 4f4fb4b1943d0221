"""What the kernel says about processes and sockets (/proc): memory, children, TCP sockets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


def vm_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class TcpSocket(NamedTuple):
    """One row of /proc/net/tcp (or tcp6): ports, state and queues of a socket on this host."""
    local_port: int
    remote_port: int
    state: str  # two hex digits: 01 ESTABLISHED, 08 CLOSE_WAIT, 0A LISTEN
    tx_queue: int  # bytes sent but not acknowledged, or not yet sent (ss's Send-Q)
    inode: str
    #: Bytes received and not yet read; for a LISTEN socket, connections waiting in its accept
    #: queue.
    rx_queue: int = 0


def tcp_sockets(tables: tuple[str, ...] = ("/proc/net/tcp",)) -> list[TcpSocket]:
    """Every TCP socket of this host in ``tables``, as the kernel lists them."""
    rows = []
    for table in tables:
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            tx, rx = (int(n, 16) for n in f[4].split(":"))
            rows.append(TcpSocket(int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                                  f[3], tx, f[9], rx))
    return rows


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces): state,
    parent pid, ...; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def children(pid: int, zombies: bool = False) -> set[int]:
    """Pids of the children of ``pid`` (without zombies unless ``zombies``)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields and int(fields[1]) == pid and (zombies or fields[0] != "Z"):
            out.add(int(entry))
    return out


def zombies_of(pid: int) -> set[int]:
    """Children of ``pid`` that exited and were not reaped."""
    return {c for c in children(pid, zombies=True) if (_stat_fields(c) or ["?"])[0] == "Z"}


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def status_ids(pid: int, field: str) -> list[int]:
    """A /proc/PID/status id line (``Uid``, ``Gid``: real, effective, saved, filesystem)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets ``pid`` holds open (empty when it is gone)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    return inodes


def listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` itself listens on (IPv4 and IPv6): not another process's listener
    on the same port, which a connection attempt cannot tell apart."""
    inodes = socket_inodes(pid)
    return {s.local_port for s in tcp_sockets(("/proc/net/tcp", "/proc/net/tcp6"))
            if s.state == "0A" and s.inode in inodes}  # 0A = LISTEN


def established(pid: int) -> bool:
    """``pid`` holds an established TCP connection (a client being served)."""
    inodes = socket_inodes(pid)
    return any(s.state == "01" and s.inode in inodes  # 01 = ESTABLISHED
               for s in tcp_sockets(("/proc/net/tcp", "/proc/net/tcp6")))
