#!/usr/bin/env python3
"""A real SMTP server for the integration tests: aiosmtpd's SMTP session with its Maildir
handler (aiosmtpd.handlers.Mailbox), on 127.0.0.1, optionally with STARTTLS or implicit TLS
and required AUTH.

The listening socket is bound here (port 0 picks a free one) before anything is announced, so
the test never races for a port; a restart passes the same --port again. Prints
`SMTP_READY port=N` on stdout once it accepts connections. Exits when stdin closes, so a test
that dies takes its server with it.
"""

import argparse
import asyncio
import os
import socket
import ssl
import sys
import threading

try:
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError as e:
    sys.stderr.write(
        f"smtp helper: aiosmtpd is not importable for {sys.executable} ({e}); "
        "install it with `pip install aiosmtpd` (.ci/run does)\n"
    )
    sys.exit(3)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--maildir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user", help="require AUTH as this user")
    p.add_argument("--password-file", help="the password AUTH expects")
    return p.parse_args()


def main():
    args = parse_args()
    handler = Mailbox(args.maildir)

    ctx = None
    if args.tls != "none":
        if not (args.cert and args.key):
            sys.exit("smtp helper: --tls needs --cert and --key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)

    kwargs = {"hostname": "unitwarden-test-smtp"}
    if args.tls == "starttls":
        kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
    else:
        # Implicit TLS: the whole connection is already encrypted, which aiosmtpd's
        # STARTTLS-based check cannot see. Plain: AUTH in clear text is the test's choice.
        kwargs.update(auth_require_tls=False)
    if args.user:
        with open(args.password_file) as f:
            expected = f.read().rstrip("\r\n")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == args.user
                and auth_data.password.decode() == expected
            )
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(handler, loop=loop, **kwargs),
            sock=sock,
            ssl=ctx if args.tls == "tls" else None,
        )
    )

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"SMTP_READY port={sock.getsockname()[1]}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
