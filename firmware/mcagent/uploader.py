"""Upload loop: store -> exchange bodies -> POST /api/mindconnect/v3/exchange, until empty or stopped.

Records leave the store only after an HTTP 200 (the protocol's only success; MCL counts 201/204 as failure).
What each answer means here, and why:
- 200: acknowledge the batch (one atomic state write), go on with the next one.
- 401: the token expired or was revoked: fetch a new one and retry once; a second 401 stops the flush.
- 413: the batch is too big for this service: halve it and retry (for the rest of this flush). A single
  record the service still refuses can never be sent, so it is quarantined like a 400.
- 429: rate limited: wait Retry-After (seconds or an HTTP date; capped), then retry.
- transport errors, 408 and 5xx: weather. Back off with full jitter (sleep a random time in
  [0, min(cap, base * 2**n))), keep the data; after max_tries failures in a row, stop and report.
- 400: the envelope is malformed, i.e. a bug (or one record the service cannot take): retrying cannot help
  and blocking the queue would lose everything behind it. A batch of several records is split (its first
  half alone, and so on) until the refused record goes alone; that body goes to a quarantine file
  (store.quarantine), is acked, an event reports it, the flush carries on with full batches.
- any other status: stop, keep the data, report it in the summary.

Wiring (Agent.flush): `store.commit(); return Uploader(store, conn, identity, clock=clock).flush()`,
with `conn` the shared keep-alive http.Connection and `identity` the token source (`authorization()` or
`token()`; `invalidate_token()` or `token(force=True)` after a 401). The sleep function is injectable so
the board runtime can feed its watchdog while waiting, and tests can run without waiting.
"""

from mcagent import clock as _clock
from mcagent import compat, exchange

EXCHANGE_PATH = "/api/mindconnect/v3/exchange"
_MAX_QUARANTINES = 3  # per flush: a service that rejects everything must not make us loop


def _urandom_fraction():
    b = compat.urandom(4)
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) / 4294967296


class Uploader:
    """Sends the store's pending records in batches; see the module docstring for the rules."""

    def __init__(
        self,
        store,
        conn,
        identity,
        clock=None,
        budget=exchange.DEFAULT_BUDGET,
        buf_size=0,
        backoff_base_s=2,
        backoff_cap_s=300,
        max_tries=5,
        retry_after_cap_s=900,
        sleep=None,
        rand=None,
        path=EXCHANGE_PATH,
    ):
        self.store = store
        self.conn = conn
        self.identity = identity
        if clock is None:
            clock = getattr(identity, "clock", None) or _clock.Clock()
        self.clock = clock
        self.budget = min(int(budget), exchange.MAX_BODY)
        self.buf_size = buf_size
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_tries = max_tries
        self.retry_after_cap_s = retry_after_cap_s
        if sleep is None:
            import time

            sleep = time.sleep
        self.sleep = sleep
        self.rand = rand or _urandom_fraction
        self.path = path

    # ---- helpers -----------------------------------------------------------------------------------------

    def _authorization(self, force):
        """The Authorization header value; force: the last token was refused, get a new one. Built once
        per token by the identity where it can (a token is ~1 KB: a copy per batch fragments a small heap)."""
        ident = self.identity
        if force:
            invalidate = getattr(ident, "invalidate_token", None)
            if invalidate is None:
                return "Bearer " + ident.token(force=True)
            invalidate()
        auth = getattr(ident, "authorization", None)
        return auth() if auth is not None else "Bearer " + ident.token()

    def backoff_s(self, attempt):
        """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
        ceiling = self.backoff_base_s * (1 << min(attempt, 30))
        if ceiling > self.backoff_cap_s:
            ceiling = self.backoff_cap_s
        return self.rand() * ceiling

    def _retry_after_s(self, value):
        """Seconds to wait from a Retry-After value (delta seconds or HTTP date); None if unusable."""
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            wait = int(value)
        else:
            try:
                wait = _clock.parse_http_date(value) - self.clock.now_s()
            except ValueError:
                return None
        return max(0, min(wait, self.retry_after_cap_s))

    def _vanished(self, body):
        """Count and report files that were gone when their batch was composed (once, after its ack)."""
        if body.files_missing:
            for _ in range(body.files_missing):
                self.store.count_missing_file()
            self._report(2, "mcagent: file(s) queued for upload vanished", {"count": body.files_missing})

    def _report(self, severity, description, details):
        """Queue an event about the upload itself (it travels with the next batch)."""
        try:
            self.store.append_event(self.clock.now_ms(), severity, description, details)
            self.store.commit()
        except (ValueError, OSError):
            pass

    # ---- the loop ----------------------------------------------------------------------------------------

    def flush(self, max_batches=None):
        """Send batches until the store is empty or an error stops it. Returns a summary dict:

        readings_sent, events_sent, files_sent, batches (accepted requests), retries, quarantined (records),
        dropped (readings dropped by the capacity policy, ever), pending (records left; None when unknown
        without a scan of the backlog), error (None or text), last_status.
        """
        store = self.store
        s = {
            "readings_sent": 0,
            "events_sent": 0,
            "files_sent": 0,
            "batches": 0,
            "retries": 0,
            "quarantined": 0,
            "dropped": 0,
            "pending": None,
            "error": None,
            "last_status": None,
        }
        budget = self.budget
        narrowing = None  # end of a batch refused with 400 while its halves are tried (see below)
        failures = 0  # consecutive weather failures
        force_token = False
        auth_retried = False
        quarantines = 0
        while max_batches is None or s["batches"] < max_batches:
            body = exchange.compose(store, budget, self.buf_size)
            if body is None:
                break
            if body.items == 0:  # only vanished files: nothing to send
                store.ack(body.end, body.counts())
                self._vanished(body)
                continue
            try:
                auth = self._authorization(force_token)
            except Exception as e:
                status = getattr(e, "status", None)  # an HttpError of the token endpoint
                if isinstance(e, OSError) or status in (408, 429) or (status or 0) >= 500:  # weather
                    failures += 1
                    wait = self._retry_after_s(getattr(e, "retry_after", None))
                    if not self._wait(s, failures, wait, "token: %r" % (e,)):
                        break
                    continue
                s["error"] = "token: %r" % (e,)  # not onboarded, revoked, clock...: stop, data kept
                break
            force_token = False
            try:
                resp = self.conn.request("POST", self.path, headers={"Authorization": auth}, body=body)
            except OSError as e:  # TransportError, Timeout, TLS, BodyError: data stays, back off
                self._close_conn()
                failures += 1
                if not self._wait(s, failures, None, "transport: %r" % (e,)):
                    break
                continue
            observe = getattr(self.identity, "observe", None)
            if observe is not None:
                try:
                    observe(resp)
                except Exception:
                    pass
            status = resp.status
            s["last_status"] = status
            if narrowing is not None and (status != 400 or body.records == 1) and body.end >= narrowing:
                narrowing = None  # past the refused batch: back to full batches
                budget = self.budget
            if status == 200:
                store.ack(body.end, body.counts())
                self._vanished(body)
                s["readings_sent"] += body.readings
                s["events_sent"] += body.events
                s["files_sent"] += body.files
                s["batches"] += 1
                failures = 0
                auth_retried = False
            elif status == 401:
                if auth_retried:
                    s["error"] = "HTTP 401 with a fresh token"
                    break
                auth_retried = True
                force_token = True
                s["retries"] += 1
            elif status == 413 and body.readings + body.events + body.files > 1:
                budget = body.length // 2  # the next batch holds fewer records (always at least one)
                s["retries"] += 1
            elif status == 400 and body.records > 1:
                # One bad record must not cost its neighbours: send the batch's first half alone, and so
                # on, until the record the service refuses goes alone (and only it into quarantine).
                if narrowing is None:
                    narrowing = body.end
                budget = body.length // 2
                s["retries"] += 1
            elif status == 400 or status == 413:
                if quarantines >= _MAX_QUARANTINES:
                    s["error"] = "HTTP %d: service rejects every batch" % status
                    break
                quarantines += 1
                path = store.quarantine(body, body.end, body.counts())
                self._vanished(body)
                s["quarantined"] += body.records
                try:
                    msg = bytes(resp.body[:120]).decode()
                except (TypeError, ValueError):  # not UTF-8 (or cut inside a character)
                    msg = repr(resp.body[:120])
                self._report(
                    1,
                    "mcagent: exchange batch rejected (HTTP %d), %s"
                    % (status, "kept in quarantine" if path else "dropped: no room on flash to keep it"),
                    {"file": path.rsplit("/", 1)[-1] if path else None, "records": body.records,
                     "status": status, "message": msg},
                )
            elif status == 429:
                failures += 1
                wait = self._retry_after_s(resp.headers.get("retry-after"))
                if not self._wait(s, failures, wait, "HTTP 429"):
                    break
            elif status >= 500 or status == 408:
                failures += 1
                if not self._wait(s, failures, None, "HTTP %d" % status):
                    break
            else:
                s["error"] = "HTTP %d" % status
                break
        st = store.stats(scan=False)  # no rescan of a big backlog just for the summary
        s["dropped"] = st["dropped_readings"]
        if st["pending_readings"] is not None:
            s["pending"] = st["pending_readings"] + st["pending_events"] + st["pending_files"]
        return s

    def _wait(self, s, failures, wait_s, what):
        """Sleep before the next try; False (and the summary's error set) once max_tries is exhausted."""
        if failures > self.max_tries:
            s["error"] = "%s (gave up after %d tries)" % (what, failures)
            return False
        s["retries"] += 1
        if wait_s is None:
            wait_s = self.backoff_s(failures - 1)
        self.sleep(wait_s)
        return True

    def _close_conn(self):
        try:
            self.conn.close()
        except Exception:
            pass
