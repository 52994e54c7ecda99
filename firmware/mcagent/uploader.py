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

Heap: this module is resident for a whole flush (the wake's peak), so it keeps only the loop and the 200
path; every other answer, a failed token or transport, vanished files and the reports about them are
handled in mcagent.uploadcold, loaded when that happens and unloaded at once.

Wiring (Agent.flush): `store.commit(); return Uploader(store, conn, identity, clock=clock).flush()`,
with `conn` the shared keep-alive http.Connection and `identity` the token source (mcagent.identity's
contract: `authorization()` -> "Bearer <token>", `invalidate_token()` after a 401, `observe(response)`).
The sleep function is injectable so the board runtime can feed its watchdog while waiting, and tests can
run without waiting.
"""

from micropython import const

from mcagent import compat, exchange, kinds

_EXCHANGE_PATH = const("/api/mindconnect/v3/exchange")


def _cold(fn, *args):
    return compat.call_cold("mcagent.uploadcold", fn, *args)


class Uploader:
    """Sends the store's pending records in batches; see the module docstring for the rules. clock, sleep
    and rand (a float in [0, 1)) default to the identity's clock, time.sleep and os.urandom."""

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
        path=_EXCHANGE_PATH,
    ):
        self.store = store
        self.conn = conn
        self.identity = identity
        self.clock = clock
        self.budget = min(int(budget), exchange.MAX_BODY)
        self.buf_size = buf_size
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_tries = max_tries
        self.retry_after_cap_s = retry_after_cap_s
        self.sleep = sleep
        self.rand = rand
        self.path = path

    def backoff_s(self, attempt):
        """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
        return _cold("backoff_s", self, attempt)

    def flush(self, max_batches=None):
        """Send batches until the store is empty or an error stops it. Returns a summary dict:

        <kind>_sent per record kind (readings_sent, events_sent, files_sent, custom_sent), batches (accepted
        requests), retries, quarantined (records),
        dropped (readings dropped by the capacity policy, ever), pending (records left; None when unknown
        without a scan of the backlog), error (None or text), last_status.
        """
        store = self.store
        s = {
            "batches": 0,
            "retries": 0,
            "quarantined": 0,
            "dropped": 0,
            "pending": None,
            "error": None,
            "last_status": None,
        }
        for name in kinds.NAMES:
            s[name + "_sent"] = 0
        # The loop's state, kept here so that uploadcold can change it.
        self._budget = self.budget
        self._narrowing = None  # end of a batch refused with 400 while its halves are tried
        self._failures = 0  # consecutive weather failures
        self._force = self._retried = False  # a new token is due; a 401 was answered with one
        self._quarantines = 0
        # The batches make only garbage: no collections every KB meanwhile (compat.pack_heap), the code
        # they load is packed by compat.load all the same.
        packing = compat.gc_threshold(-1)
        try:
            self._loop(s, max_batches)
        finally:
            compat.gc_threshold(packing)
        p = store.pending_known()  # no rescan of a big backlog just for the summary
        s["dropped"] = store.counters["dropped_readings"]
        if p is not None:
            s["pending"] = sum(p)
        return s

    def _loop(self, s, max_batches):
        store = self.store
        ident = self.identity
        while max_batches is None or s["batches"] < max_batches:
            body = exchange.compose(store, self._budget, self.buf_size)
            if body is None:
                break
            if not body.items:  # only vanished files: nothing to send
                _cold("vanished", self, body, True)
                continue
            # The Authorization value is built once per token by the identity where it can (a token is
            # ~1 KB: a copy per batch fragments a small heap).
            try:
                auth = _cold("authorization", self) if self._force else ident.authorization()
            except Exception as e:
                if _cold("failed", self, s, e, True):
                    continue
                break
            try:
                resp = self.conn.request("POST", self.path, headers={"Authorization": auth}, body=body)
            except OSError as e:  # TransportError, Timeout, TLS, BodyError: data stays, back off
                if _cold("failed", self, s, e, False):
                    continue
                break
            try:
                ident.observe(resp)  # the server's clock: a wrong device clock is corrected from it
            except Exception:
                pass
            status = s["last_status"] = resp.status
            if status != 200 or self._narrowing is not None:
                status = _cold("answer", self, s, body, resp)  # 200: acknowledge; False: stop
                if not status:
                    break
            if status == 200:
                store.ack(body.end, body.taken, body.damaged)
                if body.files_missing:
                    _cold("vanished", self, body, False)
                for i in range(len(kinds.NAMES)):
                    s[kinds.NAMES[i] + "_sent"] += body.sent[i]
                s["batches"] += 1
                self._failures = 0
                self._retried = False
