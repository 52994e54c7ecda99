"""Power cuts at every flash program/erase while recording, committing, uploading+acknowledging, rolling over.

littlefs (os.VfsLfs2) runs over flashsim's NOR model in the MicroPython Unix port. One workload is run once
to count its flash ops (T), then again and again from the same freshly formatted image, cut at op k (the
op is done half or not at all, the device then refuses everything), "power back": remount the same bytes,
restart the store, finish the upload, record more. After each run:
  1. every reading (and event) whose append returned before the last completed commit reached the server;
  2. records pending after the restart that the server already has are all in the batch in flight
     (answered 200, acknowledgement cut): duplicates are at most that batch;
  3. the store starts, uploads to empty, takes new readings and delivers them (usable);
  4. with the drop-oldest policy: committed-but-undelivered readings are all counted as dropped, and the
     counter never exceeds what was recorded and not delivered (exact when there is no cut);
  5. every delivered reading is intact (its padding matches its sequence number) and was really recorded;
  6. when the service rejects a batch (400), its readings are in the quarantine file and counted exactly,
     never lost and never delivered.
Default: a spread of ~700 cut points over the three workloads (~20 s; every op: see below).
MCAGENT_FULL_SWEEP=1: every op, both cut modes, plus 7 second cuts during each recovery (slow: minutes).
"""

import json
import os
import time

import multipart_check as mp
from checks import Skip
from mcagent import kind_event, kind_sample, uploader
from mcagent import store as S

UPY_TIMEOUT = 1800  # the full sweep (MCAGENT_FULL_SWEEP=1); the default run takes well under a minute
MNT = "/flash"
ROOT = MNT + "/mcagent"
DPS = [["DP-Seq", "INT"], ["DP-Pad", "STRING"]]
T0 = 1714564800000


def _pad(seq):
    return f"p{seq:05d}" * 14  # ~70 bytes: ~35 readings per 4 KiB segment, rollovers come quickly


class _Resp:
    def __init__(self, status):
        self.status = status
        self.headers = {}
        self.body = b""


class Server:
    """The service across power cuts (it lives elsewhere): checks every body strictly, answers 200 (or 400
    to batches holding a reading of `reject`)."""

    def __init__(self, reject=()):
        self.delivered = []
        self.last_ok = []
        self.reject = reject  # batches holding one of these readings get 400 (a "bug" in the envelope)
        self.events = []  # the uploader's own reports

    def request(self, method, path, headers=None, body=None, max_body=4096):
        chunks = []
        body.write_to(lambda c: chunks.append(bytes(c)))
        data = b"".join(chunks)
        assert len(data) == body.length
        seqs = readings_of(mp.parse(data, body.content_type), self.events)
        for x in seqs:
            if x in self.reject:
                return _Resp(400)
        self.delivered.extend(seqs)
        self.last_ok = seqs
        return _Resp(200)

    def close(self):
        pass


def readings_of(items, others):
    """Reading seqs (ints) and workload events ("e<i>") of a parsed body; other events go to others."""
    seqs = []
    for meta, _, payload in items:
        if meta["payload"]["type"] == "businessEvent":
            for e in json.loads(payload):
                if e["description"].startswith("ev-"):
                    seqs.append("e" + e["description"][3:])
                else:
                    others.append(e)
    for _, elem in mp.readings(items):
        vals = {}
        for v in elem["values"]:
            vals[v["dataPointId"]] = v["value"]
        seq = int(vals["DP-Seq"])
        assert vals["DP-Pad"] == _pad(seq), f"damaged reading {seq}"
        seqs.append(seq)
    return seqs


class _Identity:
    def authorization(self):
        return "Bearer t"

    def invalidate_token(self):
        pass

    def observe(self, resp):
        pass


class _Clock:
    def now_ms(self):
        return T0

    def now_s(self):
        return T0 // 1000


def _no_sleep(s):
    raise AssertionError("no backoff expected against this server")


VARIANTS = {
    # name: (readings, store options, upload every, explicit commit every, budget)
    "main": (100, {"commit_every": 6}, 30, 16, 2600),
    "drop": (150, {"commit_every": 5, "capacity_bytes": 3 * 4096}, 120, 25, 2600),
    "reject": (80, {"commit_every": 6}, 40, 16, 2600),  # the service answers 400 to batches with REJECT
}
REJECT = (25, 26, 27)


class Run:
    """One workload run on one device; records what had returned when the power went."""

    def __init__(self, variant):
        self.variant = variant
        self.server = Server(REJECT if variant == "reject" else ())
        self.appended = []  # readings whose append returned True, in order
        self.attempted = []  # readings whose append was called
        self.st = None
        self.at_cut = None  # (committed readings, last_ok) at the cut

    def snapshot(self):
        committed = self.st.committed if self.st is not None else 0
        self.at_cut = (list(self.appended[:committed]), list(self.server.last_ok))

    def store(self):
        n, opts, _, _, _ = VARIANTS[self.variant]
        return S.Store(ROOT, DPS, "cfg-pc", **opts)

    def uploader(self, st):
        budget = VARIANTS[self.variant][4]
        return uploader.Uploader(st, self.server, _Identity(), clock=_Clock(), budget=budget, sleep=_no_sleep)

    def phase_a(self):
        n, _, upload_every, commit_every, _ = VARIANTS[self.variant]
        self.st = st = self.store()
        up = self.uploader(st)
        for i in range(n):
            self.attempted.append(i)
            if st.append_sample(T0 + i, {"DP-Seq": i, "DP-Pad": _pad(i)}):
                self.appended.append(i)
            if self.variant == "main" and i % 13 == 6:  # events share the log and its guarantees
                self.attempted.append(f"e{i}")
                st.append_event(T0 + i, 2, f"ev-{i}", {"i": i})
                self.appended.append(f"e{i}")
            if i % commit_every == commit_every - 1:
                st.commit()
            if i % upload_every == upload_every - 1:
                up.flush(max_batches=2)
        st.commit()
        s = up.flush()
        assert s["error"] is None and s["pending"] == 0, s

    def finish(self, extra):
        """After power is back: restart, check what came back, upload everything, record more."""
        st = self.store()
        self.st = st
        pending = []
        r = st.reader()
        while True:
            rec = r.next()
            if rec is None:
                break
            if rec.kind == 2:  # an event (mcagent.kinds)
                # (the uploader's own reports never match)
                pending.append("e" + kind_event.decode(rec)[3][3:])
            else:
                pending.append(kind_sample.decode(rec)[2][0][2])
        already = set(self.server.delivered)
        inflight = set(self.at_cut[1]) if self.at_cut else set()
        back = [x for x in pending if x in already]
        assert set(back) <= inflight, ("acknowledged readings came back", back, inflight)
        up = self.uploader(st)
        s = up.flush()
        assert s["error"] is None and s["pending"] == 0, s
        for j in range(extra):
            seq = 100000 + j
            self.attempted.append(seq)
            assert st.append_sample(T0, {"DP-Seq": seq, "DP-Pad": _pad(seq)})
            self.appended.append(seq)
        st.commit()
        s = up.flush()
        assert s["error"] is None and s["pending"] == 0, s
        return st.stats()

    def check(self, stats, cuts):
        delivered = self.server.delivered
        got = set(delivered)
        committed = set(self.at_cut[0]) if self.at_cut else set(self.appended)
        attempted = set(self.attempted)
        assert got <= attempted, "phantom readings"
        for j in range(3):
            assert 100000 + j in got, "store not usable after recovery"
        lost = committed - got
        dropped = stats["dropped_readings"]
        if self.variant == "reject":
            quarantined = self.quarantined()
            assert not quarantined & got, (quarantined, cuts)
            assert quarantined or not set(REJECT) & committed, cuts
            assert not lost - quarantined, ("committed readings lost", sorted(lost - quarantined)[:10], cuts)
            assert stats["quarantined_readings"] == len(quarantined), (stats, len(quarantined), cuts)
            if not cuts:  # (with a cut, the report itself may be among the uncommitted appends)
                # a refused batch is split until each refused reading goes alone: one report per reading
                assert len(self.server.events) == len(quarantined), (self.server.events, quarantined)
                assert all("quarantine" in e["description"] for e in self.server.events)
        elif self.variant == "main":
            assert not lost, ("committed readings lost", sorted(lost)[:10], cuts)
            assert dropped == 0
        else:
            undelivered = len(attempted - got)
            assert len(lost) <= dropped <= undelivered, (len(lost), dropped, undelivered, cuts)
            if not cuts:
                assert dropped == len(attempted - got)  # exact without a cut
        seen = {}
        for x in delivered:
            seen[x] = seen.get(x, 0) + 1
        dups = [x for x in seen if seen[x] > 1]
        assert all(seen[x] <= 1 + len(cuts) for x in dups), "a reading delivered more than once per cut"
        return len(dups)


    def quarantined(self):
        """Readings in the quarantine files (each the exact multipart body the service rejected)."""
        out = set()
        for name in self.st.quarantined_files():
            with open(ROOT + "/" + name, "rb") as f:
                data = f.read()
            ctype = "multipart/mixed; boundary=" + data[2 : data.index(b"\r\n")].decode()
            out |= set(readings_of(mp.parse(data, ctype), []))
        return out


def _abandon(run):
    """The dead board: drop open handles without letting finalisers touch the old device later."""
    st = run.st
    if st is not None and st._f is not None:
        try:
            st._f.close()
        except BaseException:
            pass
        st._f = None
    import flashsim

    flashsim.umount(MNT)


def one_run(pristine, variant, cut_at=None, mode="half", cut2=None):
    """Run the workload, cutting at op cut_at (and at op cut2 of the recovery, if given). Returns
    (ops used by phase A, duplicates, cut happened)."""
    import flashsim

    dev = pristine.snapshot()
    dev.cut_at = cut_at
    dev.cut_mode = mode
    run = Run(variant)
    dev.on_cut = run.snapshot
    flashsim.mount(dev, MNT)
    cuts = []
    try:
        run.phase_a()
    except BaseException as e:  # noqa: B036 - PowerCut is a BaseException on purpose
        if not dev.dead:
            raise
        cuts.append(("A", cut_at))
        _ = e
    ops = dev.ops
    if dev.dead:
        _abandon(run)
        dev = dev.revive(cut_at=cut2, cut_mode=mode)
        if cut2 is not None:
            first = run.at_cut
            run2_cut = []

            def snap2():
                run2_cut.append(list(run.server.last_ok))

            dev.on_cut = snap2
            flashsim.mount(dev, MNT)
            try:
                run.finish(0)
            except BaseException:  # noqa: B036
                if not dev.dead:
                    raise
            if dev.dead:
                cuts.append(("recovery", cut2))
                _abandon(run)
                dev = dev.revive()
                # the batch in flight may be the one of either cut
                run.at_cut = (first[0], first[1] + (run2_cut[0] if run2_cut else []))
            else:
                flashsim.umount(MNT)
                dev.cut_at = None  # the recovery ended before op cut2: no second cut
        flashsim.mount(dev, MNT)
        stats = run.finish(3)
    else:
        stats = run.finish(3)
    dups = run.check(stats, cuts)
    assert dev.program_over == 0, "littlefs programmed over programmed bytes?"
    flashsim.umount(MNT)
    return ops, dups, bool(cuts)


def _pristine():
    import flashsim

    dev = flashsim.FlashSim(blocks=40)
    flashsim.mount(dev, MNT, mkfs=True)
    flashsim.umount(MNT)
    return dev.snapshot()


def _points(total, target):
    if target >= total:
        return list(range(1, total + 1))
    step = total / target
    return sorted(set([1 + int(i * step) for i in range(target)] + [total]))


def test_power_cut_sweep(full_sweep):
    if not hasattr(os, "VfsLfs2"):
        raise Skip("littlefs on a block device needs the MicroPython Unix port")
    t0 = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)
    pristine = _pristine()
    report = {}
    swept = 0
    runs = 0
    for variant, target in (("main", 420), ("drop", 160), ("reject", 120)):  # lighter default: ~20 s
        modes = ("half", "none")
        total, dups, _ = one_run(pristine, variant)  # no cut: counts the ops of the workload
        assert dups == 0
        points = list(range(1, total + 1)) if full_sweep else _points(total, target)
        cut_runs = 0
        max_dups = 0
        for idx in range(len(points)):
            k = points[idx]
            for mode in modes if full_sweep else (modes[idx % 2],):
                _, d, cut = one_run(pristine, variant, k, mode)
                assert cut
                max_dups = max(max_dups, d)
                cut_runs += 1
                if full_sweep or idx % 10 == 5:  # a second cut while recovering from the first
                    for k2 in ((1, 2, 3, 5, 8, 13, 21) if full_sweep else (1 + idx % 13,)):
                        one_run(pristine, variant, k, mode, cut2=k2)
                        cut_runs += 1
        swept += len(points)
        runs += cut_runs
        report[variant] = {"ops": total, "cut_points": len(points), "runs": cut_runs,
                           "max_duplicates": max_dups}
    t1 = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)
    kind = "full" if full_sweep else "default"
    secs = (t1 - t0) / 1000
    print(f"power-cut sweep ({kind}): {swept} cut points, {runs} runs with a cut, {secs:.1f} s: "
          + json.dumps(report))
    assert swept >= 400
