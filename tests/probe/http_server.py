#!/usr/bin/env python3
"""A real HTTP server for the probe tests (src/probe/tests.rs): Python's http.server on
127.0.0.1, optionally behind TLS, with one path per behaviour a probe must judge:

  /ok               200, "status: ok", Content-Length
  /status?N         status N, a short body
  /redirect         301 to /ok
  /chunked          200, chunked, "ok" only in the last chunk
  /close-delimited  200 without Content-Length, the body ends when the connection closes
  /big              200, 200 KiB of "x" and then "ok"
  /early-hints      103 Early Hints first, then 200 "ok"
  /gzip             200, Content-Encoding: gzip
  /echo             200, the request line and headers as received, as the body
  /hang             reads the request, never answers
  /slow-headers     the status line, then nothing more
  /slow-body        headers for 1000 bytes, 10 of them, then nothing more

The listening socket is bound (port 0: a free one) before anything is announced, so the test
never races for a port. Prints `HTTP_READY port=N` once it accepts connections. Exits when
stdin closes, so a test binary that ends takes its servers with it.
"""

import argparse
import gzip
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Set never: the hanging paths wait on it until the process exits.
NEVER = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        # The TLS handshake runs here, in the connection's own thread, so a client that never
        # finishes one cannot stall the accepting thread.
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/ok":
            self.reply(200, b"status: ok\n")
        elif path == "/status":
            code = int(query)
            self.reply(code, f"status {code}\n".encode())
        elif path == "/redirect":
            self.reply(301, b"", [("Location", "/ok")])
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for part in [b"status", b": all ", b"fine, ", b"ok"]:
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        elif path == "/close-delimited":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            self.wfile.write(b"first part, ")
            self.wfile.flush()
            self.wfile.write(b"then ok\n")
            self.close_connection = True
        elif path == "/big":
            self.reply(200, b"x" * (200 * 1024) + b"ok")
        elif path == "/early-hints":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self.wfile.flush()
            self.reply(200, b"ok")
        elif path == "/gzip":
            self.reply(200, gzip.compress(b"status: ok\n"), [("Content-Encoding", "gzip")])
        elif path == "/echo":
            self.reply(200, self.requestline.encode() + b"\r\n" + bytes(self.headers))
        elif path == "/hang":
            NEVER.wait()
        elif path == "/slow-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.wfile.flush()
            NEVER.wait()
        elif path == "/slow-body":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            self.wfile.flush()
            NEVER.wait()
        else:
            self.reply(404, b"not found\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that give up (a failed certificate check, a probe's timeout) are expected.
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cert", help="serve TLS with this certificate chain (PEM)")
    p.add_argument("--key", help="the certificate's private key (PEM)")
    args = p.parse_args()

    server = Server(("127.0.0.1", 0), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"HTTP_READY port={server.server_address[1]}", flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
