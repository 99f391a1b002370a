"""Who may change state through the dashboard, and from where.

* Reading needs nothing (bind to loopback, or put the dashboard behind your proxy's authentication).
* Every change (approve, reject, attest) is a POST that must carry the start-up token, either
  - as a browser session: ``POST /login`` with the token sets an ``HttpOnly; SameSite=Strict`` cookie that
    holds a signature by a secret drawn when the server started (not the token), and every form carries a
    CSRF value derived from that cookie, rendered only into pages served to a browser that sent it; or
  - as the header ``X-Loopguard-Token: TOKEN`` (scripts; browsers cannot send a custom header cross-origin
    without a CORS preflight, which the dashboard never grants).
* A POST whose ``Origin`` (or, without one, ``Referer``) is not the dashboard's own origin is refused, and a
  cookie-authenticated POST with neither header is refused too (browsers always send ``Origin`` on POST).
* The ``Host`` header must name the dashboard (loopback names by default), so a page on another site that
  re-points its DNS name at 127.0.0.1 (DNS rebinding) reads nothing and changes nothing.
* Read-only mode refuses every change.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_HOSTS", "Auth", "host_of", "is_loopback"]

#: Host names a dashboard bound to loopback answers to.
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
#: How long a browser session lasts.
SESSION_SECONDS = 12 * 3600
#: The shortest token accepted.
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(host_header: str) -> str:
    """The host name of a ``Host`` header, without the port (``[::1]:8765`` -> ``::1``)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


class Auth:
    """The token, the browser sessions derived from it, and the origin and host checks."""

    def __init__(
        self,
        token: str | None,
        *,
        read_only: bool = False,
        allowed_hosts: Sequence[str] | None = None,
        origins: Sequence[str] = (),
        session_seconds: float = SESSION_SECONDS,
    ) -> None:
        if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN):
            raise ValueError(f"the dashboard token must be a string of at least {MIN_TOKEN} characters")
        if token is None and not read_only:
            raise ValueError(
                "a dashboard that can change state (approve, reject, attest) needs a token: "
                "give token='...' (at least 16 characters) or read_only=True"
            )
        self.token = token
        self.read_only = read_only
        hosts = LOOPBACK_HOSTS if allowed_hosts is None else tuple(allowed_hosts)
        self.any_host = "*" in hosts
        self.hosts = frozenset(h.strip("[]").lower() for h in hosts if h != "*")
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)
        self.session_seconds = session_seconds
        self._secret = secrets.token_bytes(32)

    # -- hosts and origins ------------------------------------------------------------------------------
    def host_allowed(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        return host_header is not None and host_of(host_header) in self.hosts

    def same_origin(self, scheme: str, host_header: str, headers: Mapping[str, str]) -> bool | None:
        """True: the request comes from a page of this dashboard; False: from elsewhere (or ``Origin: null``);
        None: the request says nothing about where it comes from (no ``Origin``, no ``Referer``)."""
        origin = headers.get("origin")
        if origin is None:
            referer = headers.get("referer")
            if referer is None:
                return None
            origin = _origin(referer) or "null"
        own = {f"{scheme}://{host_header}".lower(), *self.origins}
        return origin.rstrip("/").lower() in own

    # -- sessions -------------------------------------------------------------------------------------
    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: str | None) -> bool:
        if self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def new_session(self, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self._sign('session', issued)}"

    def session_ok(self, value: str | None, now: float | None = None) -> bool:
        if not value or self.token is None or "." not in value:
            return False
        issued, _, signature = value.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(signature, self._sign("session", issued)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return 0 <= age <= self.session_seconds

    def csrf(self, session: str) -> str:
        """The value a form must carry along with the session cookie."""
        return self._sign("csrf", session)[:32]

    def refuse_change(
        self,
        *,
        scheme: str,
        host_header: str,
        headers: Mapping[str, str],
        session: str | None,
        form_csrf: str | None,
    ) -> str | None:
        """Why a state-changing request is refused, or None when it may go ahead."""
        if self.read_only:
            return "this dashboard is read-only: nothing can be changed through it"
        same = self.same_origin(scheme, host_header, headers)
        if same is False:
            return "refused: the request comes from another origin (cross-site requests cannot change anything)"
        header_token = headers.get("x-loopguard-token")
        if header_token is not None:
            return None if self.check_token(header_token) else "refused: the X-Loopguard-Token header is wrong"
        if same is None:
            return "refused: a browser request without Origin or Referer cannot change anything"
        if not self.session_ok(session):
            return "refused: log in with the dashboard's token first"
        if not form_csrf or not hmac.compare_digest(form_csrf, self.csrf(session or "")):
            return "refused: the form is stale or forged (reload the page and try again)"
        return None
