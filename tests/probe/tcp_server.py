"""A TCP service for the tcp-probe tests, run as a unit of the test's systemd --user manager:

    python3 tcp_server.py PORT CONNECTION_LOG

Listens on 127.0.0.1:PORT, answers each connection with "hello\\n" and appends one line (its
own PID) per accepted connection to CONNECTION_LOG, so a test sees the probes arrive. On
SIGUSR1 it closes its listening socket and keeps running: the process, and so the unit, stays
active while the port refuses connections, as a server whose listener died would.
"""

import os
import signal
import socket
import sys


class Close(Exception):
    pass


def on_usr1(_signum, _frame):
    raise Close()


def main():
    port = int(sys.argv[1])
    log = sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        while True:
            conn, _ = listener.accept()
            with conn:
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.close(fd)
                try:
                    conn.sendall(b"hello\n")
                except OSError:
                    pass  # the prober may hang up first
    except Close:
        listener.close()
        print(f"tcp_server: closed port {port}, still running", flush=True)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
