"""A Django-like app's health endpoint, run by the health-probe tests under gunicorn (from
PyPI), the way the Django stack runs:

    python3 -m gunicorn --chdir tests/probe --bind 127.0.0.1:PORT health_app:app

`GET /health/` answers according to the file named by $HEALTH_MODE_FILE, read at each request:

    ok    (or no file) 200 "ok"
    500   500 "database unavailable"
    hang  no answer until the mode changes (at most 10 minutes): a stuck worker

and appends one line `ARBITER WORKER STATUS` to the file named by $HEALTH_REQUEST_LOG: the
PID of gunicorn's arbiter (the unit's MainPID), of the worker that answered, and 200, 500 or
hang (a hang is written when the request arrives). A test counts from it the probes that
reached the server, and which instance of the unit answered them. `GET /` answers 200 and is not logged: it tells that the server is up without
counting as a probe.
"""

import os
import time

MODE_FILE = os.environ.get("HEALTH_MODE_FILE")
REQUEST_LOG = os.environ.get("HEALTH_REQUEST_LOG")
HANG_LIMIT = 600.0
# How often a hung request looks at the mode file again: it lets a test end the hang.
HANG_RECHECK = 0.1


def mode():
    if not MODE_FILE:
        return "ok"
    try:
        with open(MODE_FILE) as f:
            return f.read().strip() or "ok"
    except FileNotFoundError:
        return "ok"


def record(status):
    if REQUEST_LOG:
        # One write(2) on an O_APPEND descriptor: lines of concurrent requests never mix.
        fd = os.open(REQUEST_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getppid()} {os.getpid()} {status}\n".encode())
        finally:
            os.close(fd)


def reply(start_response, status, body):
    data = body.encode()
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))],
    )
    return [data]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/":
        return reply(start_response, "200 OK", "up")
    if path != "/health/":
        return reply(start_response, "404 Not Found", "not found")
    current = mode()
    if current == "hang":
        record("hang")
        deadline = time.monotonic() + HANG_LIMIT
        while mode() == "hang" and time.monotonic() < deadline:
            time.sleep(HANG_RECHECK)
        return reply(start_response, "503 Service Unavailable", "was hung")
    if current == "500":
        record(500)
        return reply(start_response, "500 Internal Server Error", "database unavailable")
    record(200)
    return reply(start_response, "200 OK", "ok")
