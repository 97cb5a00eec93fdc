#!/usr/bin/env python3
"""A TCP server in a process of its own, for the retrans tests
(retrans_test.cpp), run inside the test's network namespace with
`ip netns exec`.

    retrans_server.py --address ADDR [--port P] [--name COMM] [--bytes N]

Listens on ADDR (IPv4 or IPv6) and port P (0: one the kernel picks), under
the process name COMM (default retrans-srv), and prints one JSON line when
it listens:
    {"port": P, "pid": PID}
Each accepted connection is served on a thread, by one command byte from the
client:
    g  send N bytes (--bytes), then wait for one byte from the client, which
       it sends once it has read them all, and answer "k": the client's
       acknowledgment of every byte has arrived, so nothing is left to
       retransmit; then wait for the client's FIN and close
    s  send one byte, then wait for the client's FIN and close
SIGTERM ends it; it also dies with its parent (PR_SET_PDEATHSIG).
"""
import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import threading

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def wait_for_fin(conn):
    while conn.recv(4096):
        pass


def serve(conn, size):
    with conn:
        command = conn.recv(1)
        if command == b"g":
            block = b"r" * 65536
            left = size
            while left > 0:
                n = min(left, len(block))
                conn.sendall(block[:n])
                left -= n
            if recv_exactly(conn, 1) == b"d":
                conn.sendall(b"k")
        elif command == b"s":
            conn.sendall(b"x")
        wait_for_fin(conn)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="retrans-srv")
    parser.add_argument("--bytes", type=int, default=1 << 20)
    args = parser.parse_args()
    libc.prctl(PR_SET_NAME, args.name.encode(), 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.address, args.port))
    listener.listen(16)
    print(json.dumps({"port": listener.getsockname()[1], "pid": os.getpid()}), flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, args.bytes), daemon=True).start()


if __name__ == "__main__":
    main()
