#!/usr/bin/env python3
"""A TCP server in its own processes, for the owner tests (owner_test.cpp).

    tcp_server.py --family 4|6 --mode single|prefork|reuseport [--workers N]
                  [--port P] [--name COMM]

single     one process listens and serves each connection on a thread.
prefork    the master listens, then forks N workers that accept on that one
           socket (nginx's and Apache's pre-fork model); the master serves
           nothing.
reuseport  N workers, each with its own SO_REUSEPORT listening socket on
           the same port (the kernel picks one per connection).

Process names (comm) say the role: srv-single, srv-master, srv-worker
(--name replaces srv-single). The port is --port, or one the kernel picks.
When every worker listens, one JSON line goes to stdout:
    {"port": P, "master": PID, "workers": [PID, ...]}
Each accepted connection gets "PID\\n" (the serving process) and then one
command byte from the client:
    c  the server closes first
    w  the server waits for the client's FIN, then closes
    f  the server fills the connection with data the client has not read
       yet, then closes: its socket is orphaned in FIN_WAIT1 with data
       still queued
SIGTERM ends the master and its workers; every process also dies with its
parent (PR_SET_PDEATHSIG), so a failed test leaves nothing behind.
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


def set_name(name):
    libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def loopback(family):
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def listening_socket(family, port, reuseport):
    s = socket.socket(family, socket.SOCK_STREAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((loopback(family), port))
    s.listen(64)
    return s


def serve(conn):
    with conn:
        conn.sendall(b"%d\n" % os.getpid())
        command = conn.recv(1)
        if command == b"w":
            while conn.recv(4096):
                pass
        elif command == b"f":
            conn.setblocking(False)
            chunk = b"x" * 65536
            try:
                while True:
                    conn.send(chunk)
            except BlockingIOError:
                pass


def accept_forever(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def fork_worker(body, ready_w):
    pid = os.fork()
    if pid == 0:
        die_with_parent()
        set_name("srv-worker")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            body(ready_w)
        finally:
            os._exit(0)
    return pid


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", type=int, choices=(4, 6), default=4)
    parser.add_argument("--mode", choices=("single", "prefork", "reuseport"), default="single")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="srv-single")
    args = parser.parse_args()
    family = socket.AF_INET6 if args.family == 6 else socket.AF_INET
    die_with_parent()
    workers = []

    def stop(signum, frame):
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)

    if args.mode == "single":
        set_name(args.name)
        listener = listening_socket(family, args.port, False)
        port = listener.getsockname()[1]
        threading.Thread(target=accept_forever, args=(listener,), daemon=True).start()
    else:
        set_name("srv-master")
        ready_r, ready_w = os.pipe()
        if args.mode == "prefork":
            listener = listening_socket(family, args.port, False)
            port = listener.getsockname()[1]

            def body(w):
                os.write(w, b"x")
                accept_forever(listener)
        else:
            # Hold the port with a bound, never listening socket of the
            # group, so the workers can all bind it.
            holder = socket.socket(family, socket.SOCK_STREAM)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind((loopback(family), args.port))
            port = holder.getsockname()[1]

            def body(w):
                own = listening_socket(family, port, True)
                os.write(w, b"x")
                accept_forever(own)
        for _ in range(args.workers):
            workers.append(fork_worker(body, ready_w))
        for _ in range(args.workers):
            os.read(ready_r, 1)
    print(json.dumps({"port": port, "master": os.getpid(), "workers": workers}), flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
