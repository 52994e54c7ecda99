"""The upload loop's rare paths (mcagent.uploader): a new token after a 401, a failed token fetch or
request, every answer but a plain 200 (split, halve, quarantine, back off, stop), vanished files and the
events that report them. Loaded per use and unloaded at once (compat.call_cold); it keeps no state: the
loop's is on the Uploader (_budget, _narrowing, _failures, _force, _retried, _quarantines)."""

from micropython import const

from mcagent import compat

_MAX_QUARANTINES = const(3)  # per flush: a service that rejects everything must not make us loop


def authorization(up):
    """The Authorization value after a 401: the last token was refused, a new one is fetched."""
    ident = up.identity
    ident.invalidate_token()
    up._force = False
    return ident.authorization()


def failed(up, s, e, token):
    """The token (token=True) or the request failed with e: True to try again (after a wait)."""
    if token:
        status = getattr(e, "status", None)  # an HttpError of the token endpoint
        if not (isinstance(e, OSError) or status in (408, 429) or (status or 0) >= 500):  # not weather
            s["error"] = "token: %r" % (e,)  # not onboarded, revoked, clock...: stop, data kept
            return False
        wait = _retry_after_s(up, getattr(e, "retry_after", None))
        what = "token: %r" % (e,)
    else:
        try:
            up.conn.close()
        except Exception:
            pass
        wait = None
        what = "transport: %r" % (e,)
    up._failures += 1
    return _wait(up, s, wait, what)


def answer(up, s, body, resp):
    """Any answer but a 200 outside a 400 split: 200 to acknowledge the batch, True to go on, False to
    stop."""
    status = resp.status
    alone = sum(body.sent) <= 1  # one record sent (a vanished file's record is taken, never sent)
    if up._narrowing is not None and (status != 400 or alone) and body.end >= up._narrowing:
        up._narrowing = None  # past the refused batch: back to full batches
        up._budget = up.budget
    if status == 200:
        return 200
    if status == 401:
        if up._retried:
            s["error"] = "HTTP 401 with a fresh token"
            return False
        up._retried = up._force = True
    elif status == 413 and not alone:
        up._budget = body.length // 2  # the next batch holds fewer records (always at least one)
    elif status == 400 and not alone:
        # One bad record must not cost its neighbours: send the batch's first half alone, and so on,
        # until the record the service refuses goes alone (and only it into quarantine).
        if up._narrowing is None:
            up._narrowing = body.end
        up._budget = body.length // 2
    elif status == 400 or status == 413:
        return _quarantine(up, s, body, resp)
    elif status == 429 or status == 408 or status >= 500:
        up._failures += 1
        wait = _retry_after_s(up, _header_wait(up, resp.headers)) if status == 429 else None
        return _wait(up, s, wait, "HTTP %d" % status)
    else:
        s["error"] = "HTTP %d" % status
        return False
    s["retries"] += 1
    return True


def _quarantine(up, s, body, resp):
    status = resp.status
    if up._quarantines >= _MAX_QUARANTINES:
        s["error"] = "HTTP %d: service rejects every batch" % status
        return False
    up._quarantines += 1
    path = up.store.quarantine(body, body.end, body.taken)
    vanished(up, body, False)
    s["quarantined"] += body.records
    try:
        msg = bytes(resp.body[:120]).decode()
    except (TypeError, ValueError):  # not UTF-8 (or cut inside a character)
        msg = repr(resp.body[:120])
    _report(
        up,
        1,
        "mcagent: exchange batch rejected (HTTP %d), %s"
        % (status, "kept in quarantine" if path else "dropped: no room on flash to keep it"),
        {
            "file": path.rsplit("/", 1)[-1] if path else None,
            "records": body.records,
            "status": status,
            "message": msg,
        },
    )
    return True


def vanished(up, body, ack):
    """Count and report files that were gone when their batch was composed (once, after its ack; ack: the
    batch holds nothing else, acknowledge it here)."""
    store = up.store
    if ack:
        store.ack(body.end, body.taken, body.damaged)
    n = body.files_missing
    if n:
        for _ in range(n):
            store.count_missing_file()
        _report(up, 2, "mcagent: file(s) queued for upload vanished", {"count": n})


def _clock(up):
    c = up.clock or getattr(up.identity, "clock", None)
    if c is None:
        from mcagent import clock

        c = clock.Clock()
    up.clock = c
    return c


def _report(up, severity, description, details):
    """Queue an event about the upload itself (it travels with the next batch)."""
    try:
        up.store.append_event(_clock(up).now_ms(), severity, description, details)
        up.store.commit()
    except (ValueError, OSError):
        pass


def _retry_after_s(up, wait):
    """The wait a Retry-After asked for (seconds, parsed by httputil), capped; None if there was none."""
    return None if wait is None else max(0, min(wait, up.retry_after_cap_s))


def _header_wait(up, headers):
    """Seconds from a 429's Retry-After header (a date measured against the response's Date, else our
    clock)."""
    value = headers.get("retry-after")
    if not value:
        return None
    return compat.call_cold(
        "mcagent.httputil", "parse_retry_after", value, headers.get("date"), _clock(up).now_s()
    )


def backoff_s(up, attempt):
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    ceiling = min(up.backoff_base_s * (1 << min(attempt, 30)), up.backoff_cap_s)
    rand = up.rand
    if rand is None:
        b = compat.urandom(4)
        return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) / 4294967296 * ceiling
    return rand() * ceiling


def _wait(up, s, wait_s, what):
    """Sleep before the next try; False (and the summary's error set) once max_tries is exhausted."""
    failures = up._failures
    if failures > up.max_tries:
        s["error"] = "%s (gave up after %d tries)" % (what, failures)
        return False
    s["retries"] += 1
    if wait_s is None:
        wait_s = backoff_s(up, failures - 1)
    sleep = up.sleep
    if sleep is None:
        import time

        sleep = time.sleep
    sleep(wait_s)
    return True
