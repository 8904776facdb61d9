"""The drill's HTTP client: the paths it may send, the readiness probe, and one GET."""

from __future__ import annotations

import http.client
import time
import urllib.parse

from .model import Answer, DrillError

#: Where the drill's server listens (on a free port).
HOST = "127.0.0.1"
#: What the readiness probe asks for: any HTTP answer (a 404 is fine) means it serves.
READY_PATH = "/__django_graceful_drill__/"
HEADERS = {"User-Agent": "django_graceful drill"}


def check_url(url: str) -> None:
    """Refuse a ``--url`` the client cannot send as it is (a one-line reason)."""
    if not url.startswith("/"):
        raise DrillError(f"--url {url!r}: a path must start with '/' (e.g. /slow/)")
    if not url.isprintable() or any(ch.isspace() for ch in url) or "#" in url:
        raise DrillError(f"--url {url!r}: a path without spaces, control characters or '#'")
    if not url.isascii():
        quoted = urllib.parse.quote(url, safe="/?&=%+:;,@!$'()*~")
        raise DrillError(f"--url {url!r}: percent-encode it ({quoted})")


def answers(port: int, timeout: float) -> bool:
    """Whether the server on ``port`` answers an HTTP request (any status) in ``timeout`` s."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", READY_PATH, headers=HEADERS)
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def fetch(port: int, url: str, timeout: float, outcome: Answer) -> None:
    """One GET; what it got goes into ``outcome``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", url, headers=HEADERS)
        response = conn.getresponse()
        outcome.status = response.status
        while chunk := response.read1(65536):
            outcome.bytes += len(chunk)
        if response.length:  # what Content-Length promised and never came
            outcome.error = "closed mid-body"
    except http.client.RemoteDisconnected:
        outcome.error = "closed without a response"
    except http.client.IncompleteRead:
        outcome.error = "closed mid-body"
    except ConnectionResetError:
        outcome.error = "connection reset"
    except ConnectionRefusedError:
        outcome.error = "connection refused"
    except TimeoutError:
        outcome.error = f"no answer within {timeout:g} s"
    except Exception as exc:  # whatever it was, the drill goes on and says it
        outcome.error = f"{type(exc).__name__}: {exc}"[:100]
    finally:
        outcome.ended = time.monotonic()
        conn.close()
