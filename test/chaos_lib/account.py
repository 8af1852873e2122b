"""The account: every event the fake published is stored exactly once, or it
falls inside a recorded gap with its cause; every lost event VoIPBIN's REST
can give back was given back; nothing is doubled; handler runs equal events;
no crash but the injected ones; the worker's memory within its bound.

Lost is judged by time: an event is excused when it was published within a
gap of voipbin_gaps (from SLACK_BEFORE before its start: frames still in the
socket when it broke, to SLACK_AFTER after its end: topics not yet applied by
the fake); or, sent by webhook alone, when every delivery was refused (5xx,
or no listener) and VoIPBIN gave up: the receiver said so ("refused").  What
REST gives back (docs/failures.md, "Gaps and their repair"):
every call event (the call and its timeline), every transcript line (fewer
than 100 per transcription here), and the last state of each transcription
and recording.

The handler's requests (rig.SQL): a hangup, safe to repeat, for each stored
call_hangup, which must end done; a talk, which VoIPBIN must not get twice,
for each stored call_progressing, which VoIPBIN may have acted on at most
once and which is never sent again after an answer that may have acted (no
answer, or a 5xx: docs/requests.md)."""
import json
import re
from datetime import datetime, timezone

from helpers import credential_lines

from .ledger import event_key
from .faults import INJECTED_DATA_ERROR
from .memory import SLACK_MB
from .rig import BUFFER_LIMIT_MB, crash_lines

SLACK_BEFORE = 2.0
SLACK_AFTER = 1.0
SHOW = 10       # event ids named per discrepancy


def clock(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-3] if t else "?"


def refused(entry):
    """Sent by webhook only, and never taken: each delivery answered 5xx or
    not at all."""
    return (entry.ws_delivered == 0 and entry.webhook_statuses
            and all(st == 0 or st >= 500 for st in entry.webhook_statuses))


def repairable(entry):
    return entry.kind in ("call", "transcript") or entry.latest


class Account:
    def __init__(self, ledger, snap, ctx, sampler, problems):
        self.ledger, self.snap, self.ctx, self.sampler = ledger, snap, ctx, sampler
        self.problems = list(problems)
        self.failures = []          # (what, [event ids or details])
        self.lost = {}              # cause -> count
        self.figures = {}

    def fail(self, what, items=()):
        self.failures.append((what, list(items)))

    def windows(self, until):
        """(start, end of loss, end of repair, cause) of every gap."""
        out = []
        for gid, started, ended, repaired, _, error, cause, lost in self.snap["gaps"]:
            end = ended if ended is not None else until
            out.append((started - SLACK_BEFORE, end + SLACK_AFTER,
                        (repaired if repaired is not None else until) + SLACK_AFTER, cause))
        return out

    def check_events(self):
        stored = {}
        sources = {}
        for eid, event_type, rid, data, source, received in self.snap["events"]:
            k = event_key(event_type, rid, data)
            stored.setdefault(k, []).append(eid)
            sources.setdefault(k, []).append(source)
        until = max([e.t1 for e in self.ledger.entries] + [0]) + 60
        wins = self.windows(until)
        doubled, phantom, lost_no_cause, not_repaired, acked_lost, live_lost = [], [], [], [], [], []
        repaired = 0
        for k, ids in stored.items():
            if k not in self.ledger.by_key:
                phantom.extend(ids)
            elif len(ids) > 1:
                doubled.append("%s %s (ids %s)" % (k[0], k[1], ",".join(map(str, sorted(ids)))))
        for e in self.ledger.entries:
            ids = stored.get(e.key)
            in_gap = [w for w in wins if w[0] <= e.t1 and e.t0 <= w[1]]
            if ids:
                if "rest" in sources[e.key]:
                    repaired += 1
                    # stored only by the repair, though delivered live far from any gap:
                    # the live path lost it, and repair hid the loss
                    live = e.ws_delivered or 200 in e.webhook_statuses
                    if live and not [w for w in wins if w[0] <= e.t1 and e.t0 <= w[2]]:
                        live_lost.append("%s %s" % (e.event_type, e.resource_id))
                continue
            name = "%s %s (published %s, %d frame(s) delivered, webhooks %s)" % (
                e.event_type, e.resource_id, clock(e.t0), e.ws_delivered, e.webhook_statuses or "none")
            if 200 in e.webhook_statuses:
                acked_lost.append(name)         # answered 200 only once on disk
            elif refused(e) and not in_gap:
                # every delivery refused (503: no secret yet, the journal full;
                # or no listener) and VoIPBIN's retries gave up: the receiver
                # said so, and no WebSocket frame carried it
                self.lost["refused"] = self.lost.get("refused", 0) + 1
            elif repairable(e):
                not_repaired.append(name + (" (in a %s gap)" % in_gap[0][3] if in_gap else " (in no gap)"))
            elif in_gap:
                self.lost[in_gap[0][3]] = self.lost.get(in_gap[0][3], 0) + 1
            else:
                lost_no_cause.append(name)
        if doubled:
            self.fail("events stored twice", doubled)
        if phantom:
            self.fail("rows of events never published", ["voipbin_events.id %d" % i for i in phantom])
        if acked_lost:
            self.fail("webhook deliveries answered 200 but never stored", acked_lost)
        if not_repaired:
            self.fail("lost events REST can give back, not repaired", not_repaired)
        if lost_no_cause:
            self.fail("events lost outside any recorded gap", lost_no_cause)
        if live_lost:
            self.fail("events delivered live outside any gap but stored only by repair", live_lost)
        self.figures.update(stored=sum(1 for e in self.ledger.entries if e.key in stored),
                            doubled=len(doubled), repaired=repaired,
                            rows=len(self.snap["events"]))
        return stored

    def check_dead_letters(self):
        injected = [d for d in self.ctx.dead_letters if INJECTED_DATA_ERROR in (d[1] or "")]
        other = [d for d in self.ctx.dead_letters if INJECTED_DATA_ERROR not in (d[1] or "")]
        if other:
            self.fail("dead letters not made by an injected data error",
                      ["dead letter %d: %s" % (i, (err or "")[:160]) for i, err in other])
        if self.snap["dead_letters"]:
            self.fail("dead letters left after voipbin_retry_dead_letters()",
                      ["dead letter %d: %s" % (i, (err or "")[:160]) for i, err in self.snap["dead_letters"]])
        self.figures.update(dead_injected=len(injected), dead_retried=self.ctx.retried)

    def check_handler(self):
        runs = dict(self.snap["runs"])
        ids = {r[0] for r in self.snap["events"]}
        twice = ["event %d ran %d times" % (i, n) for i, n in runs.items() if n > 1]
        missing = ["event %d never handled" % i for i in sorted(ids - set(runs))]
        stray = ["a run for event %d, which is not stored" % i for i in sorted(set(runs) - ids)]
        if twice or missing or stray:
            self.fail("handler runs are not one per stored event", twice + missing + stray)
        self.figures.update(runs=sum(runs.values()))

    def check_requests(self):
        rows = self.snap["requests"]
        writes = self.snap["writes"]
        by_type = {}
        for _, event_type, *_ in self.snap["events"]:
            by_type[event_type] = by_type.get(event_type, 0) + 1
        talks = [r for r in rows if r[1].endswith("/talk")]
        hangups = [r for r in rows if r[1].endswith("/hangup")]
        problems = []
        if len(talks) != by_type.get("call_progressing", 0) or len(hangups) != by_type.get("call_hangup", 0):
            problems.append("%d talks for %d call_progressing events stored, %d hangups for %d call_hangup"
                            % (len(talks), by_type.get("call_progressing", 0), len(hangups),
                               by_type.get("call_hangup", 0)))
        if len(talks) + len(hangups) != len(rows):
            problems.append("%d requests nobody queued" % (len(rows) - len(talks) - len(hangups)))

        def short(path):
            return path[len("/v1.0"):] if path.startswith("/v1.0/") else path
        sent = {}
        for w in writes:
            if short(w["path"]).endswith("/talk"):
                key = ("talk", (w.get("body") or {}).get("text"))
            else:
                key = ("path", short(w["path"]))
            sent.setdefault(key, []).append(w)
        known = set()
        for rid, path, text, state, attempts, status in hangups:
            known.add(("path", path))
            got = sent.get(("path", path), [])
            if state != "done" or not any(w["performed"] for w in got):
                problems.append("hangup %d (safe) ended %s after %d attempt(s), %d received, %d acted on"
                                % (rid, state, attempts, len(got), sum(w["performed"] for w in got)))
        for rid, path, text, state, attempts, status in talks:
            known.add(("talk", text))
            got = sent.get(("talk", text), [])
            acted = sum(1 for w in got if w["performed"])
            after_maybe = [i for i, w in enumerate(got[:-1]) if w["status"] is None or w["status"] >= 500]
            # done: the last answer said it acted; failed: nothing acted;
            # unknown: it may have (a 5xx, no answer, a worker gone meanwhile)
            consistent = {"done": bool(got) and acted == 1 and got[-1]["performed"],
                          "failed": acted == 0, "unknown": acted <= 1}.get(state, False)
            if acted > 1 or after_maybe or not consistent:
                problems.append("talk %d (unsafe) ended %s after %d attempt(s): received %d time(s) %s"
                                % (rid, state, attempts, len(got), [w["status"] for w in got]))
        stray = [k for k in sent if k not in known]
        if stray:
            problems.append("%d write(s) the fake received for no request: %s" % (len(stray), stray[:3]))
        if problems:
            self.fail("requests not as their rules say", problems)
        states = {}
        for r in talks:
            states[r[3]] = states.get(r[3], 0) + 1
        self.figures.update(
            requests=len(rows), hangups=len(hangups),
            hangups_done=sum(1 for r in hangups if r[3] == "done"), talks=len(talks), talk_states=states,
            writes=len(writes), acted=sum(1 for w in writes if w["performed"]))

    def check_crashes(self):
        log = self.snap["log"]
        unexpected = ["PID %d died of signal %d" % (p, s) for p, s in crash_lines(log)
                      if p not in self.ctx.killed_pids]
        unexpected += [l for l in log.splitlines() if " PANIC: " in l]
        unexpected += [l for l in log.splitlines()
                       if re.search(r'background worker "voipbin" \(PID \d+\) exited with exit code [^01]', l)]
        if unexpected:
            self.fail("crashes nobody injected", unexpected)
        # the credential never in a log, whatever the faults made the worker say
        leaked = credential_lines(log)
        if leaked:
            self.fail("the credential in the server log", ["line %d" % (log.splitlines().index(l) + 1)
                                                           for l in leaked])
        self.figures.update(crash_restarts=len(re.findall(r"all server processes terminated; reinitializing", log)))

    def check_memory(self):
        bound = (BUFFER_LIMIT_MB + SLACK_MB) * 1024
        if self.sampler.samples == 0:
            self.fail("the worker's memory was never sampled")
        elif self.sampler.peak_kb > bound:
            self.fail("the worker's memory past voipbin.buffer_limit + %d MB" % SLACK_MB,
                      ["RssAnon %d kB of PID %s > %d kB" % (self.sampler.peak_kb, self.sampler.peak_pid, bound)])

    def check(self):
        if self.ctx.errors:
            self.fail("harness steps that failed (the run is void)", self.ctx.errors)
        if self.problems:
            self.fail("the system did not settle", self.problems)
        self.ledger.mark_latest()
        self.check_events()
        self.check_dead_letters()
        self.check_handler()
        self.check_requests()
        self.check_crashes()
        self.check_memory()
        return not self.failures

    def table(self, schedule, noise):
        led = self.ledger.entries
        f = self.figures
        ws_frames = sum(e.ws_delivered for e in led)
        hooks_ok = sum(s == 200 for e in led for s in e.webhook_statuses)
        hooks_failed = sum(s != 200 for e in led for s in e.webhook_statuses)
        st = self.snap["status"]
        lines = ["faults injected:"]
        for kind, n in sorted(self.ctx.injected.items()):
            lines.append("  %-18s %6d" % (kind, n))
        rows = [
            ("events published", len(led)),
            ("  over the WebSocket (frames delivered)", "%d (%d)" % (sum(1 for e in led if e.ws), ws_frames)),
            ("  by webhook (deliveries 200 / failed)", "%d (%d / %d)" % (
                sum(1 for e in led if e.webhooks), hooks_ok, hooks_failed)),
            ("events stored", f.get("stored")),
            ("copies not stored (duplicates dropped, or lost)", ws_frames + hooks_ok - (f.get("rows", 0) - f.get("repaired", 0))),
            ("  duplicates, by the last worker's counter", st["duplicates"]),
        ]
        for cause, n in sorted(self.lost.items()):
            rows.append(("lost, in a gap of cause %s" % cause, n))
        if not self.lost:
            rows.append(("lost (in a gap, REST cannot give it back)", 0))
        gaps = self.snap["gaps"]
        rows += [
            ("gaps recorded (repaired)", "%d (%d)" % (len(gaps), sum(1 for g in gaps if g[3] is not None))),
            ("repaired (stored by gap repair)", f.get("repaired")),
            ("doubled (must be 0)", f.get("doubled")),
            ("handler runs / events stored", "%s / %s" % (f.get("runs"), f.get("rows"))),
            ("dead letters injected / retried", "%s / %s" % (f.get("dead_injected"), f.get("dead_retried"))),
            ("crash restarts (injected kills)", "%s (%d)" % (
                f.get("crash_restarts"), self.ctx.injected.get("kill_worker", 0) + self.ctx.injected.get("kill_backend", 0))),
            ("worker RssAnon peak / bound (MB)", "%.1f / %d" % (self.sampler.peak_kb / 1024.0, BUFFER_LIMIT_MB + SLACK_MB)),
            ("frames_lost (last worker)", st["frames_lost"]),
            ("topic (un)subscriptions by sessions", "%d / %d" % (noise["subscribe"], noise["unsubscribe"])),
            ("requests queued by the handler", f.get("requests")),
            ("  hangups (safe): done / queued", "%s / %s" % (f.get("hangups_done"), f.get("hangups"))),
            ("  talks (unsafe): %s" % " / ".join(sorted(f.get("talk_states") or {})) or "-",
             "%s of %s" % (" / ".join(str(v) for _, v in sorted((f.get("talk_states") or {}).items())),
                           f.get("talks"))),
            ("  sent to the fake (acted on)", "%s (%s)" % (f.get("writes"), f.get("acted"))),
        ]
        for name, v in rows:
            lines.append("%-48s %s" % (name, v))
        return "\n".join(lines)

    def verdict(self, seed):
        if not self.failures:
            return "account: PASS (seed %s)" % seed
        out = ["account: FAIL (seed %s; replay: test/chaos --seed %s ...)" % (seed, seed)]
        for what, items in self.failures:
            out.append("  %s: %d" % (what, len(items)))
            for i in items[:SHOW]:
                out.append("    " + str(i))
            if len(items) > SHOW:
                out.append("    ... and %d more" % (len(items) - SHOW))
        return "\n".join(out)

    def to_json(self, seed, minutes, plant):
        return json.dumps({"seed": seed, "minutes": minutes, "plant": plant, "pass": not self.failures,
                           "figures": self.figures, "lost": self.lost, "injected": self.ctx.injected,
                           "failures": [{"what": w, "items": i} for w, i in self.failures]}, indent=1)
