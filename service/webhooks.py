"""Webhooks: a job's events POSTed to the URL it was submitted with, signed, retried, never lost.

The pieces, in the order an event goes through them:

- **Admission** (``check_url``, ``admit``): http or https, at most ``MAX_URL`` ASCII characters,
  no credentials, and, unless ``GCN_WEBHOOK_ALLOW_PRIVATE``, no loopback, private or link-local
  address literal; events are ``completed`` (the default) and/or ``progress``.
- **The outbox** (``enqueue``): a ``gcn_webhook_deliveries`` row written by ``JobStore`` in the
  *same transaction* as the job's ending (succeeded, failed, canceled: whoever ends it) or, for
  ``progress``, as a progress write. Its ``payload`` is the job document at that moment, exactly
  as ``GET /v1/jobs/{id}`` answered then (``service/jobdoc.py``). A crash after the commit
  cannot lose the event; a crash before it loses the ending too, which is then retried as a whole.
- **Sending** (``Dispatcher``): a thread in each worker's job process looks for due deliveries
  every ``GCN_WEBHOOK_POLL_INTERVAL`` s (and at once when its own process ends a job), takes a
  lease on each (a guarded UPDATE, so two senders never POST one delivery at the same time), and
  POSTs it with a timeout. 2xx: delivered. 4xx other than 408 and 429: the receiver refuses it,
  failed for good. Anything else (3xx, 408, 429, 5xx, no connection, timeout): retried after
  ``GCN_WEBHOOK_BACKOFF`` s, doubling up to ``GCN_WEBHOOK_BACKOFF_MAX`` (half of each wait is
  random), until ``GCN_WEBHOOK_MAX_ATTEMPTS``. A sender that dies mid-POST leaves its lease to
  expire; the delivery is then due again. So delivery is **at least once**: receivers should
  deduplicate on ``X-GCN-Delivery``. Progress events are best effort: one attempt, superseded by
  the next event, expired after ``progress_ttl``; the training thread only writes their row.
- **Signing** (``sign``, ``verify``): ``X-GCN-Signature: sha256=HEX``, the HMAC-SHA256 of
  ``"{X-GCN-Timestamp}." + body`` under ``GCN_WEBHOOK_SECRET`` (or a key generated once into
  ``DATA_DIR/webhook-secret``).
- **Housekeeping** (``housekeeping``, run by the worker's reconciler loop): fails deliveries
  whose attempts were used up by senders that died, expires stale progress events, and removes
  finished deliveries whose job row was removed by retention.

Nothing here imports FastAPI, Celery or the worker.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import logging
import os
import random
import secrets
import socket
import ssl
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from .db import Database, Job, WebhookDelivery, utcnow
from .settings import Settings

log = logging.getLogger("gcn.webhooks")

EVENTS = ("completed", "progress")
COMPLETED, PROGRESS = EVENTS
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_URL = 2048
KEEP_PROGRESS = 3  # progress deliveries kept per job (the newest)
SECRET_FILE = "webhook-secret"
USER_AGENT = "gcn-webhooks/1"
_HOST_LABEL = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


# ---- admission -------------------------------------------------------------------------------
class BadWebhook(ValueError):
    """A webhook that cannot be accepted; ``part`` is ``url`` or ``events``."""

    def __init__(self, part: str, message: str):
        super().__init__(message)
        self.part = part


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address: not loopback, private (RFC 1918, unique local), link-local
    (169.254.0.0/16 holds cloud metadata services), shared (100.64.0.0/10), multicast, reserved
    or unspecified; an IPv4-mapped IPv6 address is judged by its IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal_ip(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_url(url: Any) -> str:
    """The URL if a webhook may be sent to it (shape only; addresses are judged by ``admit`` and
    again, after name resolution, when sending)."""
    if not isinstance(url, str) or not url:
        raise BadWebhook("url", "a URL is required")
    if len(url) > MAX_URL:
        raise BadWebhook("url", f"at most {MAX_URL} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise BadWebhook("url", "ASCII without spaces or control characters (percent-encode the path, "
                                "punycode the host)")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not url.lower().startswith(("http://", "https://")):
        raise BadWebhook("url", "an http:// or https:// URL is required")
    if "@" in parts.netloc:
        raise BadWebhook("url", "credentials in the URL (user:password@) are not supported; put a token in the path "
                                "or query and verify the signature")
    host = parts.hostname or ""
    if not host:
        raise BadWebhook("url", "the URL names no host")
    try:
        port = parts.port
    except ValueError:
        raise BadWebhook("url", "the port is not a number from 1 to 65535") from None
    if port == 0:
        raise BadWebhook("url", "the port is not a number from 1 to 65535")
    if _literal_ip(host) is None:
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(0 < len(lb) <= 63 and set(lb) <= _HOST_LABEL for lb in labels):
            raise BadWebhook("url", f"{host!r} is not a valid host name")
    return url


def admit(url: Any, events: Optional[Iterable[Any]] = None, *, allow_private: bool = False) -> dict[str, Any]:
    """What a job stores for its webhook: ``{"url": ..., "events": [...]}``, or ``BadWebhook``."""
    check_url(url)
    chosen: list[str] = []
    for e in (list(events) if events is not None else [COMPLETED]):
        if e not in EVENTS:
            raise BadWebhook("events", f"{e!r} is not an event; use {' and/or '.join(EVENTS)}")
        if e not in chosen:
            chosen.append(e)
    if not chosen:
        raise BadWebhook("events", f"name at least one event ({', '.join(EVENTS)})")
    if not allow_private:
        host = (urlsplit(url).hostname or "").rstrip(".")
        ip = _literal_ip(host)
        if host == "localhost" or host.endswith(".localhost") or (ip is not None and not is_public(ip)):
            raise BadWebhook("url", f"{host} is not a public address: webhooks to loopback, private and link-local "
                                    "addresses are refused unless the server sets GCN_WEBHOOK_ALLOW_PRIVATE=true")
    return {"url": url, "events": chosen}


# ---- signing ---------------------------------------------------------------------------------
def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``b"{timestamp}." + body``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signing_key(secret: bytes, api_key_id: Optional[str]) -> bytes:
    """The key that signs the webhooks of jobs made with API key ``api_key_id``: the server's
    secret for jobs made without a key (auth off: one user), else a key of that API key's own,
    HMAC-SHA256(secret, "gcn-webhook-key:" + id) in hex. So a receiver of one API key's webhooks,
    which must hold its signing key, cannot sign requests that another key's receiver would
    accept; ``GET /v1/webhooks/secret`` hands each key its own."""
    if api_key_id is None:
        return secret
    return hmac.new(secret, f"gcn-webhook-key:{api_key_id}".encode(), hashlib.sha256).hexdigest().encode()


def verify(secret: bytes, timestamp: str | int, body: bytes, signature: str, *, tolerance: float = 300,
           now: Optional[float] = None) -> bool:
    """What a receiver does: the signature matches (constant-time) and the timestamp is within
    ``tolerance`` seconds of now (a replayed old request is refused)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature or "")


def load_secret(settings: Settings) -> bytes:
    """``GCN_WEBHOOK_SECRET``, or the key in ``DATA_DIR/webhook-secret``, made (mode 0600) by the
    first process that needs it; several processes starting at once agree on one key (it is
    written to a temporary file and linked into place, which fails if another got there first)."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    for _ in range(50):
        try:
            value = path.read_text().strip()
            if value:
                return value.encode()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{SECRET_FILE}.{uuid.uuid4().hex}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
            finally:
                tmp.unlink(missing_ok=True)
            continue
        time.sleep(0.05)  # an empty file: someone is writing it in place (by hand); look again
    raise RuntimeError(f"{path} is empty; put a secret in it or set GCN_WEBHOOK_SECRET")


# ---- retries ---------------------------------------------------------------------------------
def backoff(attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``attempts`` failed POSTs: ``base * 2**(attempts-1)`` up to ``cap``,
    of which the second half is random (so that receivers coming back are not hit all at once)."""
    full = min(cap, base * 2 ** max(attempts - 1, 0))
    return full / 2 + rand() * full / 2


def max_attempts(event: str, settings: Settings) -> int:
    return 1 if event == PROGRESS else settings.webhook_max_attempts


def progress_ttl(settings: Settings) -> float:
    """A progress event not sent within this many seconds is dropped (it is stale by then)."""
    return max(60.0, 6 * settings.webhook_progress_interval)


# ---- the outbox ------------------------------------------------------------------------------
def enqueue(s: Session, job_id: str, event: str) -> Optional[str]:
    """In the caller's transaction, right after it changed the job: add a delivery of ``event``
    if the job has a webhook that wants it; returns its id. The payload is the job document as
    it now stands, with this delivery pending in it."""
    from . import jobdoc  # jobdoc imports jobs, which calls this

    hook = s.scalar(select(Job.webhook).where(Job.id == job_id)) or {}  # one small query for jobs without
    if not hook.get("url") or event not in (hook.get("events") or [COMPLETED]):
        return None
    job = s.execute(select(Job).where(Job.id == job_id)
                    .execution_options(populate_existing=True)).scalar_one()
    now = utcnow()
    this = WebhookDelivery
    # A newer event supersedes progress events not sent yet (they would only arrive out of order).
    s.execute(delete(this).where(this.job_id == job_id, this.event == PROGRESS, this.status == PENDING,
                                 this.attempts == 0).execution_options(synchronize_session=False))
    if event == PROGRESS:
        old = list(s.scalars(select(this.id).where(this.job_id == job_id, this.event == PROGRESS)
                             .order_by(this.created_at.desc(), this.id.desc()).offset(KEEP_PROGRESS - 1)))
        if old:
            s.execute(delete(this).where(this.id.in_(old)).execution_options(synchronize_session=False))
    row = WebhookDelivery(id=uuid.uuid4().hex, job_id=job_id, event=event, url=hook["url"], status=PENDING,
                          attempts=0, log=[], created_at=now, updated_at=now, next_attempt_at=now,
                          api_key_id=job.api_key_id)
    rows = list(s.scalars(select(this).where(this.job_id == job_id).order_by(this.created_at, this.id))) + [row]
    try:
        row.payload = jobdoc.body(job, rows)
    except Exception:  # never let the document stop the job's transition: it is rendered when sent
        log.exception("job %s: could not render its %s webhook payload now; it will be rendered when sent",
                      job_id, event)
        row.payload = None
    s.add(row)
    return row.id


# ---- sending ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one POST came to."""

    status: Optional[int] = None  # the receiver's HTTP status; None: no answer
    error: Optional[str] = None
    permanent: bool = False  # never retry
    retry_after: Optional[float] = None  # the receiver's Retry-After, in seconds

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def classify(status: int, reason: str = "", retry_after: Optional[float] = None) -> Outcome:
    if 200 <= status < 300:
        return Outcome(status)
    text = f"HTTP {status}{' ' + reason if reason else ''}"
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome(status, f"{text}: the receiver refused the delivery; not retried", permanent=True)
    return Outcome(status, text, retry_after=retry_after)


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - utcnow()).total_seconds(), 0.0)


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    last: Optional[OSError] = None
    for ip in addresses:
        try:
            sock = socket.create_connection((ip, port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            last = e
    raise last or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the addresses that were checked, not to whatever the name resolves to next
    (a name that resolves to a public address once and to a private one the next time)."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[str], timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


_RESOLVER = ThreadPoolExecutor(4, thread_name_prefix="webhook-dns")  # getaddrinfo has no timeout of its own


def _abort(conn: http.client.HTTPConnection) -> None:
    """Called at the deadline: wake a read or write blocked on the receiver's socket."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> Outcome:
    """One POST (no redirects followed, no proxy), the receiver's answer classified. ``timeout``
    bounds the whole exchange, name resolution included: a receiver that answers a byte at a time
    cannot hold a sender (and every delivery behind it) longer than that, nor outlive the lease."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    https = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    try:
        infos = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM).result(timeout)
    except FutureTimeout:
        return Outcome(error=f"cannot resolve {host}: no answer in {timeout:g} s")
    except (socket.gaierror, UnicodeError) as e:
        return Outcome(error=f"cannot resolve {host}: {getattr(e, 'strerror', None) or e}")
    addresses: list[str] = []
    for info in infos:
        ip = str(info[4][0]).split("%", 1)[0]
        if ip not in addresses:
            addresses.append(ip)
    if not allow_private:
        bad = [a for a in addresses if not is_public(ipaddress.ip_address(a))]
        if bad:
            return Outcome(error=f"refused: {host} resolves to {bad[0]}, not a public address "
                                 "(GCN_WEBHOOK_ALLOW_PRIVATE=true allows it)", permanent=True)
    remaining = max(deadline - time.monotonic(), 0.05)
    conn: http.client.HTTPConnection
    conn = (_PinnedHTTPS(host, port, addresses, remaining) if https
            else _PinnedHTTP(host, port, addresses, remaining))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    watchdog = threading.Timer(remaining, _abort, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()  # the status line and headers are the answer; the body is not read
        return classify(response.status, response.reason or "", _retry_after(response.getheader("Retry-After")))
    except (OSError, http.client.HTTPException) as e:
        late = time.monotonic() >= deadline
        kind = "timed out" if late or isinstance(e, TimeoutError) else f"{e.__class__.__name__}: {e}"
        return Outcome(error=f"no answer from {host}:{port}: {kind}"[:500])
    finally:
        watchdog.cancel()
        conn.close()


@dataclass
class Lease:
    """A delivery this sender may POST until the lease runs out."""

    id: str
    job_id: str
    event: str
    url: str
    payload: Optional[str]
    attempt: int  # this attempt's number
    token: str
    started: datetime
    log: list[dict[str, Any]] = field(default_factory=list)
    previous_attempt_at: Optional[datetime] = None
    api_key_id: Optional[str] = None  # whose secret signs it


def _iso(when: Optional[datetime]) -> Optional[str]:
    return None if when is None else when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Dispatcher:
    """Sends due deliveries: ``run_once`` is one pass (it returns when its POSTs have); ``start``
    runs a thread that keeps up to ``GCN_WEBHOOK_CONCURRENCY`` POSTs in flight, looking for due
    deliveries every ``GCN_WEBHOOK_POLL_INTERVAL`` s, at once after ``wake``, and whenever a POST
    ends."""

    def __init__(self, db: Database, settings: Settings, *,
                 send: Callable[..., Outcome] = post, rand: Callable[[], float] = random.random):
        self.db = db
        self.settings = settings
        self.send = send
        self.rand = rand
        self._secret: Optional[bytes] = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pid = os.getpid()

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_secret(self.settings)
        return self._secret

    # ---- the thread ----------------------------------------------------------------------
    def start(self) -> "Dispatcher":
        self.secret  # made (or read) now, not in the middle of a first delivery
        self._pool = ThreadPoolExecutor(self.settings.webhook_concurrency, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        """Keep up to ``webhook_concurrency`` POSTs in flight, and fill a slot as soon as its POST
        ends: a receiver that hangs until the timeout holds one slot, while the other
        receivers' deliveries go on through the rest (a pass that waited for all of its POSTs
        made every delivery due after it wait for the slowest receiver)."""
        in_flight: set[Future] = set()
        while not self._stop.is_set():
            self._wake.clear()  # before the pass: a wake during it makes the wait below return at once
            in_flight = {f for f in in_flight if not f.done()}
            free = self._batch - len(in_flight)
            started = 0
            if free > 0:
                try:
                    for lease in self._leases(free):
                        if self._stop.is_set():  # stopping: this lease runs out and another sender takes it
                            break
                        future = self._pool.submit(self.attempt, lease)
                        future.add_done_callback(self._finished)
                        in_flight.add(future)
                        started += 1
                except Exception:  # a database blip: the next pass tries again
                    log.exception("webhook pass failed")
            if started < free or free == 0:  # nothing more due now, or every slot busy
                self._wake.wait(self.settings.webhook_poll_interval)

    def _finished(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is not None:  # attempt() records its own errors
            log.error("webhook attempt failed", exc_info=future.exception())
        self._wake.set()  # a free slot: look for due deliveries now

    @property
    def _batch(self) -> int:
        return self.settings.webhook_concurrency

    # ---- one pass --------------------------------------------------------------------------
    def run_once(self) -> int:
        """Lease the deliveries that are due now and POST them (in parallel when started);
        returns how many were attempted."""
        leases = self._leases(self._batch)
        if self._pool is not None and len(leases) > 1:
            list(self._pool.map(self.attempt, leases))
        else:
            for lease in leases:
                self.attempt(lease)
        return len(leases)

    def _leases(self, limit: int) -> list[Lease]:
        """Leases on up to ``limit`` deliveries that are due now (those another sender won are skipped)."""
        return [lease for lease in map(self._lease, self._due(limit)) if lease is not None]

    def _due(self, limit: Optional[int] = None) -> list[Any]:
        now = utcnow()
        d = WebhookDelivery
        with self.db.session() as s:
            return list(s.execute(
                select(d.id, d.event, d.attempts, d.created_at, d.last_attempt_at)
                .where(d.status == PENDING, d.next_attempt_at <= now, or_(d.leased_until.is_(None), d.leased_until < now))
                .order_by(d.next_attempt_at).limit(limit or self._batch)))

    def _lease(self, row: Any) -> Optional[Lease]:
        settings = self.settings
        now = utcnow()
        d = WebhookDelivery
        free = (d.id == row.id, d.status == PENDING, d.attempts == row.attempts,
                or_(d.leased_until.is_(None), d.leased_until < now))
        give_up = None
        if row.event == PROGRESS and (now - row.created_at).total_seconds() > progress_ttl(settings):
            give_up = "expired: progress events are best effort and this one was not sent in time"
        elif row.attempts >= max_attempts(row.event, settings):
            give_up = (f"gave up after {row.attempts} attempt(s); the last one's result was not recorded "
                       "(its sender stopped)")
        with self.db.session() as s:
            if give_up:
                s.execute(update(d).where(*free).values(status=FAILED, error=give_up, next_attempt_at=None,
                                                        updated_at=now))
                s.commit()
                return None
            token = uuid.uuid4().hex
            until = now + timedelta(seconds=2 * settings.webhook_timeout + 5)
            won = s.execute(update(d).where(*free).values(
                attempts=d.attempts + 1, last_attempt_at=now, leased_until=until, lease_token=token,
                updated_at=now)).rowcount
            s.commit()
            if not won:
                return None  # another sender took it
            got = s.execute(select(d.job_id, d.url, d.payload, d.log, d.api_key_id)
                            .where(d.id == row.id)).one_or_none()
        if got is None:
            return None
        return Lease(id=row.id, job_id=got.job_id, event=row.event, url=got.url, payload=got.payload,
                     attempt=row.attempts + 1, token=token, started=now, log=list(got.log or []),
                     previous_attempt_at=row.last_attempt_at or row.created_at, api_key_id=got.api_key_id)

    def attempt(self, lease: Lease) -> Outcome:
        """POST a leased delivery once and record what happened."""
        clock = time.monotonic()
        try:
            body = lease.payload if lease.payload is not None else self._render_now(lease.job_id)
            if body is None:
                outcome = Outcome(error="the job no longer exists and its document was not kept", permanent=True)
            else:
                outcome = self.send(lease.url, body.encode(), self.headers(lease, body.encode()),
                                    timeout=self.settings.webhook_timeout,
                                    allow_private=self.settings.webhook_allow_private)
        except Exception as e:  # a bug or an odd URL must not stop the sender; the attempt counts
            log.exception("webhook delivery %s crashed", lease.id)
            outcome = Outcome(error=f"internal error: {e.__class__.__name__}: {e}"[:500])
        self.record(lease, outcome, time.monotonic() - clock)
        return outcome

    def headers(self, lease: Lease, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        return {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-GCN-Event": lease.event, "X-GCN-Delivery": lease.id, "X-GCN-Attempt": str(lease.attempt),
            "X-GCN-Timestamp": str(timestamp),
            "X-GCN-Signature": sign(signing_key(self.secret, lease.api_key_id), timestamp, body),
        }

    def _render_now(self, job_id: str) -> Optional[str]:
        from . import jobdoc
        from .jobs import with_deliveries  # jobs imports this module

        with self.db.session() as s:
            job = s.get(Job, job_id)
            return None if job is None else jobdoc.body(job, with_deliveries(s, [job])[0].deliveries)

    def record(self, lease: Lease, outcome: Outcome, seconds: float) -> bool:
        settings = self.settings
        now = utcnow()
        entries = list(lease.log)
        for k in range(len(entries) + 1, lease.attempt):  # attempts whose sender died before recording them
            entries.append({"attempt": k, "at": _iso(lease.previous_attempt_at), "response_status": None,
                            "error": "no result recorded: its sender stopped mid-attempt", "duration_ms": None})
        entries.append({"attempt": lease.attempt, "at": _iso(lease.started), "response_status": outcome.status,
                        "error": outcome.error, "duration_ms": int(seconds * 1000)})
        values: dict[str, Any] = dict(response_status=outcome.status, error=outcome.error, log=entries[-50:],
                                      leased_until=None, lease_token=None, updated_at=now)
        if outcome.delivered:
            values.update(status=DELIVERED, delivered_at=now, next_attempt_at=None)
        elif outcome.permanent:
            values.update(status=FAILED, next_attempt_at=None)
        elif lease.attempt >= max_attempts(lease.event, settings):
            values.update(status=FAILED, next_attempt_at=None,
                          error=f"{outcome.error}; gave up after {lease.attempt} attempt(s)")
        else:
            wait = backoff(lease.attempt, settings.webhook_backoff, settings.webhook_backoff_max, self.rand)
            if outcome.retry_after is not None:
                wait = max(wait, min(outcome.retry_after, settings.webhook_backoff_max))
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        d = WebhookDelivery
        with self.db.session() as s:
            ok = s.execute(update(d).where(d.id == lease.id, d.lease_token == lease.token).values(**values)).rowcount
            s.commit()
        level = logging.INFO if outcome.delivered else logging.WARNING
        log.log(level, "webhook %s (%s of job %s) attempt %d: %s", lease.id, lease.event, lease.job_id, lease.attempt,
                "delivered" if outcome.delivered else outcome.error)
        return bool(ok)


# ---- housekeeping (the reconciler loop) ------------------------------------------------------
def housekeeping(db: Database, settings: Settings) -> dict[str, int]:
    """Fail deliveries whose attempts are spent and whose last sender died (lease run out),
    expire progress events too old to matter, and remove finished deliveries of jobs that
    retention removed. Safe to run anywhere, any number of times."""
    now = utcnow()
    d = WebhookDelivery
    lease_over = or_(d.leased_until.is_(None), d.leased_until < now)
    with db.session() as s:
        spent = s.execute(update(d).where(
            d.status == PENDING, lease_over,
            or_(d.attempts >= settings.webhook_max_attempts, (d.event == PROGRESS) & (d.attempts >= 1)),
        ).values(status=FAILED, next_attempt_at=None, updated_at=now,
                 error="gave up: the attempts were spent and the last one's result was not recorded (its sender stopped)")
        ).rowcount or 0
        stale = s.execute(update(d).where(
            d.status == PENDING, lease_over, d.event == PROGRESS,
            d.created_at < now - timedelta(seconds=progress_ttl(settings)),
        ).values(status=FAILED, next_attempt_at=None, updated_at=now,
                 error="expired: progress events are best effort and this one was not sent in time")).rowcount or 0
        pruned = s.execute(delete(d).where(
            d.status != PENDING, ~exists(select(Job.id).where(Job.id == d.job_id)),
        ).execution_options(synchronize_session=False)).rowcount or 0
        s.commit()
    if spent or stale:
        log.warning("webhooks: %d delivery(ies) given up (sender lost), %d progress event(s) expired", spent, stale)
    return {"given_up": spent, "expired": stale, "pruned": pruned}


# ---- the sender of this process ---------------------------------------------------------------
_process: Optional[Dispatcher] = None
_process_lock = threading.Lock()


def start_dispatcher(db: Database, settings: Settings) -> Dispatcher:
    """Start this process's sender (once; again in a forked child)."""
    global _process
    with _process_lock:
        if _process is None or not _process.alive:
            _process = Dispatcher(db, settings).start()
        return _process


def wake() -> None:
    """Tell this process's sender, if it runs, to look for due deliveries now."""
    d = _process
    if d is not None and d.alive:
        d.wake()


def stop_dispatcher(timeout: float = 5.0) -> None:
    global _process
    with _process_lock:
        d, _process = _process, None
    if d is not None and d.alive:
        d.stop(timeout)


__all__ = [
    "BadWebhook", "Dispatcher", "EVENTS", "Lease", "Outcome", "admit", "backoff", "check_url", "classify",
    "enqueue", "housekeeping", "is_public", "load_secret", "post", "sign", "start_dispatcher", "stop_dispatcher",
    "verify", "wake",
]
