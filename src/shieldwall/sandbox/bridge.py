"""Runs inside a sandbox in ``network="proxy"`` mode: listens on 127.0.0.1:PORT in the
sandbox's own network namespace and forwards each connection to the egress proxy's Unix
socket bound into the sandbox, then execs the real command. The sandbox has no other
route out; the proxy (a Shieldwall face) decides what may leave.

Usage (inside the sandbox): python3 -I bridge.py SOCKET PORT -- ARGV...
Standard library only: it runs under the sandbox's system interpreter.
"""

import os
import socket
import sys
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(path: str, listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(path)
        except OSError:
            conn.close()
            up.close()
            continue
        threading.Thread(target=_pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=_pump, args=(up, conn), daemon=True).start()


def main() -> None:
    path, port, sep, *argv = sys.argv[1:]
    if sep != "--" or not argv:
        sys.exit("usage: bridge.py SOCKET PORT -- ARGV...")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(64)
    if os.fork() == 0:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _serve(path, listener)
        os._exit(0)
    listener.close()
    os.execvp(argv[0], argv)  # noqa: S606 - exec the sandboxed command itself


if __name__ == "__main__":
    main()
