#!/usr/bin/env python3
"""Opens N idle TLS + HTTP/2 connections to a running `sigil ca serve` and
reports how much the server's resident memory grew per connection.

Each connection completes the TLS handshake (ALPN h2, the server's root
from the admin port's /root.pem, name `localhost`), sends the HTTP/2 client
preface and an empty SETTINGS frame, and waits until the server has
acknowledged that SETTINGS frame (so the server has processed the preface
and the connection is idle in HTTP/2). Nothing else is sent; the
connections stay open until the measurement is taken.

usage: idle-conns.py PID GRPC_ADDR ADMIN_ADDR N [STAGE]

STAGE (default h2) stops each connection earlier, to see what each layer
costs: tcp (connected, nothing sent), tls (handshake done, no HTTP/2
preface), h2 (preface and SETTINGS exchanged).
"""

import os
import socket
import ssl
import sys
import urllib.request

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise RuntimeError("the server closed the connection")
        out += chunk
    return out


def open_idle(context, host, port, stage="h2"):
    raw = socket.create_connection((host, port))
    if stage == "tcp":
        return raw
    tls = context.wrap_socket(raw, server_hostname="localhost")
    if stage == "tls":
        return tls
    assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
    tls.sendall(PREFACE + SETTINGS)
    acked = False
    while not acked:
        header = read_exact(tls, 9)
        length = int.from_bytes(header[0:3], "big")
        kind, flags = header[3], header[4]
        read_exact(tls, length)
        if kind == 0x4 and not flags & 0x1:
            tls.sendall(SETTINGS_ACK)  # the server's SETTINGS
        elif kind == 0x4 and flags & 0x1:
            acked = True  # the server processed ours
    return tls


def main():
    pid, grpc, admin, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stage = sys.argv[5] if len(sys.argv) > 5 else "h2"
    host, port = grpc.rsplit(":", 1)
    roots = urllib.request.urlopen(f"http://{admin}/root.pem").read().decode()
    context = ssl.create_default_context(cadata=roots)
    context.set_alpn_protocols(["h2"])
    # Warm-up: the first connection sets up lazily built state.
    warm = open_idle(context, host, int(port))
    warm.close()
    before = rss_kib(pid)
    conns = [open_idle(context, host, int(port), stage) for _ in range(n)]
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"connections: {n} (stage {stage})")
    print(f"server RSS before: {before} KiB, after: {after} KiB")
    print(f"growth: {after - before} KiB, {per / 1024:.1f} KiB per idle connection")
    if os.environ.get("HOLD"):
        # For an in-process probe: keep the connections until stdin closes.
        sys.stdout.flush()
        sys.stdin.read()
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
