#!/usr/bin/python3
"""Issue 14's scale rows: ingest as the table grows, retention under a
sustained load, and the cost of dropping a day.  Long (minutes to tens of
minutes each), so `bench/run` runs them only when asked:

    bench/run --only growth          # ingest at 0 / 2 M / 10 M rows already stored
    bench/run --only sustained       # 3,000 events/s for 10 min, event_retention = 3min
    bench/run --only dropday         # a day of 10 M rows becomes due: time and WAL
    bench/run --only growth,dropday  # several, one after the other (one cluster)
    bench/run --scale                # bench.py's rows, then all three

Each row's result replaces its own part of bench/RESULTS.md's scale section
(`--label` names the part, e.g. "before" and "after" a change; the other
parts are kept), and is printed.  The setup (emitter, throwaway cluster with
fsync on, the worker subscribed) is bench.py's; what is measured, and how, is
written next to the numbers.
"""
import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench as B  # noqa: E402
import events  # noqa: E402
from prefill import prefill  # noqa: E402

ROWS = ("growth", "sustained", "dropday")
EXT = B.EXT
SECTION = "## Scale: growth, sustained retention, dropping a day (issue 14)"
log = B.log

# every leaf of the table, whether it is partitioned or not (pg_partition_tree
# lists nothing for a table that is neither partitioned nor a partition)
LEAVES = ("SELECT oid AS relid FROM pg_class WHERE oid = '{t}'::regclass AND relkind = 'r'"
          " UNION ALL SELECT relid FROM pg_partition_tree('{t}') WHERE isleaf").format(t=EXT)


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def sustained_frames(cache, n):
    """A frames file of about n distinct events (whole calls, 50,000 a
    seed), kept in the cache directory: Python takes minutes to make it."""
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, "sustained-%d.frames" % n)
    if os.path.exists(path):
        with open(path + ".count") as f:
            return path, int(f.read())
    log("sustained: writing %d frames to %s" % (n, path))
    left, seed, made = n, 5000, 0
    with open(path + ".tmp", "wb") as f:
        while left > 0:
            chunk = events.generate(min(left, 50000), seed)
            seed += 1
            for fr in chunk:
                b = fr[3].encode()
                f.write(len(b).to_bytes(4, "big"))
                f.write(b)
            left -= len(chunk)
            made += len(chunk)
    with open(path + ".count", "w") as f:
        f.write(str(made))
    os.rename(path + ".tmp", path)
    return path, made


class Scale(B.Bench):
    """bench.py's Bench, with its own setup (no frame sets of its own rows)."""

    def setup(self):
        a = self.a
        # the rows set their own retention; none while prefilling
        self.start_servers(10.0, "on", log_autovacuum_min_duration="0", **{"voipbin.event_retention": "0"})
        c = self.cluster
        self.dsn = "host=%s port=%d dbname=%s user=postgres" % (c.sock, c.port, c.dbname)
        self.point_worker()
        for t in events.TOPICS:
            c.execute("SELECT voipbin_subscribe(%s)", (t,))
        self.em.wait_one_subscriber(len(events.TOPICS))
        c.wait_status(lambda s: s["state"] == "connected", what="worker connected")
        self.collect_machine()
        self.partitioned = c.query_one("SELECT relkind = 'p' FROM pg_class WHERE oid = %s::regclass",
                                       (EXT,))[0]
        self.res["partitioned"] = self.partitioned
        self.salt_n = 0
        self.sets = 0

    # -------------------------------------------------------------- helpers

    def q1(self, sql, params=None):
        return self.cluster.query_one(sql, params)[0]

    def lsn(self):
        return self.q1("SELECT pg_current_wal_lsn()::text")

    def wal_since(self, lsn):
        return self.q1("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn,))

    def total_size(self):
        return self.q1("SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM (%s) l" % LEAVES)

    def dead_live(self):
        return self.cluster.query_one(
            "SELECT coalesce(sum(n_dead_tup), 0)::bigint, coalesce(sum(n_live_tup), 0)::bigint"
            " FROM pg_stat_user_tables WHERE relid IN (%s)" % LEAVES)

    def fill(self, n, start, end, checkpoint=True):
        """n more rows received over [start, end), keys not used before.
        Checkpoints are spaced out meanwhile (fewer full-page images to
        write), then the measured settings come back."""
        c = self.cluster
        c.set_conf(max_wal_size="16GB", checkpoint_timeout="1h")
        try:
            g0 = self.salt_n
            self.salt_n += n
            rate = prefill(c.connect, n, start, end, salt="scale", g0=g0, streams=self.a.streams, log=log)
            # what autovacuum would have done meanwhile, so it does not run during the blasts
            c.execute("VACUUM (ANALYZE) %s" % EXT)
        finally:
            c.set_conf(max_wal_size=None, checkpoint_timeout=None)
            if checkpoint:
                c.execute("CHECKPOINT")
        return rate

    def new_set(self, n):
        """A frame set none of whose events is stored yet (a seed of its own)."""
        self.sets += 1
        return B.FrameSet(self.workdir, "scale%d" % self.sets, n, 1000 + self.sets)

    def blast(self, fs):
        """fs blasted at the worker as bench.py's throughput rows do, into a
        table that already holds rows: events/s to the last NOTIFY."""
        self.em.load(fs.path)
        n0 = self.count(EXT)
        st0 = self.cluster.status()
        self.cluster.execute("CHECKPOINT")
        lsn0 = self.lsn()
        timeout = 60 + fs.n / 100
        lst = self.start_end_listener(fs, timeout)
        try:
            self.em.cmd("blast")
            end = lst.read_json(timeout + 5)
            if "end_ns" not in end:
                raise B.BenchError("the last event's NOTIFY never arrived (%s)" % end)
            job = self.em.wait_job(30)
        finally:
            self.procs.stop(lst)
        wal = self.wal_since(lsn0)
        n1 = self.count(EXT)
        st1 = self.cluster.status()
        if n1 - n0 != fs.n or st1["duplicates"] != st0["duplicates"] or st1["dead_letters"] != st0["dead_letters"]:
            raise B.BenchError("blast: %d rows added of %d (duplicates %d, dead letters %d)"
                               % (n1 - n0, fs.n, st1["duplicates"] - st0["duplicates"],
                                  st1["dead_letters"] - st0["dead_letters"]))
        secs = (end["end_ns"] - job["t_first_ns"]) / 1e9
        return {"rows_before": n0, "rate": fs.n / secs, "seconds": secs, "wal_mb": wal / 1e6,
                "load": uptime()}

    # -------------------------------------------------------------- rows

    def growth(self):
        """Ingest rate with 0, 2 M and 10 M rows already stored: the prefill's
        rows spread over the last 7 days (the default retention), so a
        partitioned table holds them the way a week of ingest would."""
        a = self.a
        c = self.cluster
        c.execute("TRUNCATE %s" % EXT)
        self.salt_n = 0
        now = datetime.now(timezone.utc)
        window = timedelta(days=7)
        out = {"levels": []}
        for level in a.levels:
            have = self.count(EXT)
            if level > have:
                # the new rows continue the week where the last fill stopped
                lo = now - window + window * (have / a.levels[-1])
                hi = now - window + window * (level / a.levels[-1])
                log("growth: prefilling %d rows (to %d)" % (level - have, level))
                t0 = time.monotonic()
                rate = self.fill(level - have, lo, hi)
                log("growth: prefill took %.0f s (%.0f rows/s)" % (time.monotonic() - t0, rate))
            size = self.total_size()
            runs = []
            for i in range(a.runs):
                fs = self.new_set(a.events)
                log("growth: %d rows stored, blast %d/%d of %d events" % (self.count(EXT), i + 1, a.runs, fs.n))
                runs.append(self.blast(fs))
                log("growth: %s" % json.dumps(B._rounded(runs[-1])))
            out["levels"].append({"level": level, "table_bytes": size, "runs": runs,
                                  "median": statistics.median(r["rate"] for r in runs)})
        base = out["levels"][0]["median"]
        for lv in out["levels"]:
            lv["ratio"] = lv["median"] / base
        self.res["growth"] = out

    def sustained(self):
        """rate events/s for seconds, event_retention = retention: the table's
        size and dead tuples sampled every 5 s."""
        a = self.a
        c = self.cluster
        c.execute("TRUNCATE %s" % EXT)
        if self.partitioned:
            # as on a fresh install: the partitions made at start, a day each under
            # the default retention, would hold the whole run (a change of retention
            # or interval applies to the partitions made after it)
            for (name,) in c.query("SELECT partition::text FROM voipbin_partitions()"):
                c.execute("DROP TABLE %s" % name)
        n = int(a.sustained_rate * a.sustained_seconds)
        path, n = sustained_frames(a.cache, n)
        if self.partitioned and a.sustained_interval:
            # by default the worker's own choice: a quarter of the short retention
            c.set_conf(voipbin__partition_interval=a.sustained_interval)
        c.set_conf(voipbin__event_retention=a.sustained_retention)
        # a gigabyte or two of frames: the emitter takes a while to read them
        self.em.sock.settimeout(900)
        self.em.load(path)
        self.em.sock.settimeout(60)
        st0 = c.status()
        c.execute("CHECKPOINT")
        lsn0 = self.lsn()
        samples = []
        t0 = time.monotonic()
        self.em.cmd("pace %g %s" % (a.sustained_rate, os.path.join(self.workdir, "sustained.sendtimes")))
        log("sustained: %d frames at %g/s, event_retention = %s" % (n, a.sustained_rate, a.sustained_retention))
        next_log = 0
        while True:
            t = time.monotonic() - t0
            dead, live = self.dead_live()
            st = c.status()
            samples.append({"t": t, "bytes": self.total_size(), "dead": dead, "live": live,
                            "stored": st["events_stored"] - st0["events_stored"],
                            "partitions": self.q1("SELECT count(*) FROM (%s) l" % LEAVES)})
            if t >= next_log:
                log("sustained: %s" % json.dumps(B._rounded(samples[-1])))
                next_log += 60
            job = self.em.status()["job"]
            if job["state"] in ("done", "failed"):
                break
            time.sleep(5 - (time.monotonic() - t0) % 5)     # the sampling period
        if job["state"] != "done":
            raise B.BenchError("emitter job failed: %s" % job["error"])
        try:
            B.wait_until(lambda: c.status()["events_stored"] - st0["events_stored"] >= n,
                         timeout=300, interval=0.2, what="the worker caught up")
            behind = 0
        except AssertionError:
            behind = n - (c.status()["events_stored"] - st0["events_stored"])
            log("sustained: the worker is %d events behind 5 min after the last frame" % behind)
        wal = self.wal_since(lsn0)
        part_range = (self.q1("SELECT max(upper - lower)::text FROM voipbin_partitions()")
                      if self.partitioned else None)
        c.set_conf(voipbin__event_retention="0")
        if self.partitioned:
            c.set_conf(voipbin__partition_interval=None)
        mark = a.sustained_retention_s
        at_mark = min(samples, key=lambda s: abs(s["t"] - mark))
        last = [s for s in samples if s["t"] >= a.sustained_seconds - mark]
        peak_last = max(s["bytes"] for s in last)
        dead_mid = [s["dead"] for s in samples if mark <= s["t"] < a.sustained_seconds - mark]
        dead_last = [s["dead"] for s in last]
        self.res["sustained"] = {
            "events": n, "behind": behind, "late": job["late"],
            "stored_rate": samples[-1]["stored"] / max(samples[-1]["t"], 1e-6), "max_late_ms": job["max_late_ns"] / 1e6,
            "bytes_at_mark": at_mark["bytes"], "peak_last": peak_last,
            "ratio": peak_last / at_mark["bytes"],
            "dead_mid_max": max(dead_mid or [0]), "dead_last_max": max(dead_last or [0]),
            "dead_end": samples[-1]["dead"], "live_end": samples[-1]["live"],
            "wal_gb": wal / 1e9, "load": uptime(), "partition_range": part_range,
            "samples": [{k: (round(v, 1) if k == "t" else v) for k, v in s.items()}
                        for s in samples[::6]]}
        log("sustained: %s" % json.dumps(B._rounded({k: v for k, v in self.res["sustained"].items()
                                                      if k != "samples"})))

    def dropday(self):
        """drop_rows rows received in one day, three days ago; then
        event_retention = 2 days makes that whole day due.  Time and WAL from
        the reload until none of those rows is left (polled every 50 ms).  An
        unpartitioned table deletes in batches and takes far longer: there
        the rows deleted in drop_window seconds are measured instead, and
        the whole day's cost is that rate's extrapolation."""
        a = self.a
        c = self.cluster
        c.set_conf(voipbin__event_retention="0")
        c.execute("TRUNCATE %s" % EXT)
        self.salt_n = 0
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        day = today - timedelta(days=3)
        day_end = day + timedelta(days=1)
        log("dropday: prefilling %d rows received on %s" % (a.drop_rows, day.date()))
        t0 = time.monotonic()
        rate = self.fill(a.drop_rows, day, day_end)
        log("dropday: prefill took %.0f s (%.0f rows/s)" % (time.monotonic() - t0, rate))
        # neighbours within the retention, to show they stay: the day before
        # yesterday's last hour is past it by then, yesterday's first is not
        g0 = self.salt_n
        self.salt_n += 2000
        yesterday = today - timedelta(days=1)
        prefill(c.connect, 1000, yesterday, yesterday + timedelta(hours=1), salt="scale", g0=g0, streams=1)
        prefill(c.connect, 1000, today, today + timedelta(minutes=1), salt="scale", g0=g0 + 1000, streams=1)
        size = self.total_size()
        c.execute("CHECKPOINT")
        in_day = "SELECT count(*) FROM %s WHERE received_at >= %%s AND received_at < %%s" % EXT
        rows_day = self.q1(in_day, (day, day_end))
        lsn0 = self.lsn()
        t0 = time.monotonic()
        c.set_conf(voipbin__event_retention="2d")
        gone = "SELECT NOT EXISTS (SELECT FROM %s WHERE received_at >= %%s AND received_at < %%s)" % EXT
        out = {"rows": rows_day, "table_bytes": size, "partitioned": self.partitioned, "load": uptime()}
        if self.partitioned:
            B.wait_until(lambda: self.q1(gone, (day, day_end)), timeout=a.drop_window,
                         interval=0.05, what="the day dropped")
            out["seconds"] = time.monotonic() - t0
            out["wal_mb"] = self.wal_since(lsn0) / 1e6
            out["deleted"] = rows_day
        else:
            time.sleep(a.drop_window)   # the measuring window, not a wait for anything
            out["window_s"] = time.monotonic() - t0
            out["wal_mb"] = self.wal_since(lsn0) / 1e6
            c.set_conf(voipbin__event_retention="0")
            out["deleted"] = rows_day - self.q1(in_day, (day, day_end))
            if out["deleted"] <= 0:
                raise B.BenchError("dropday: nothing deleted in %.0f s" % out["window_s"])
            out["seconds_projected"] = out["window_s"] * rows_day / out["deleted"]
            out["wal_mb_projected"] = out["wal_mb"] * rows_day / out["deleted"]
        out["neighbours_left"] = self.q1("SELECT count(*) FROM %s WHERE received_at < %%s OR received_at >= %%s"
                                         % EXT, (day, day_end))
        c.set_conf(voipbin__event_retention="0")
        self.res["dropday"] = out
        log("dropday: %s" % json.dumps(B._rounded(out)))

    def run(self):
        t_start = time.monotonic()
        self.setup()
        self.worker_on()
        for row in self.a.rows:
            log("row %s (load %s)" % (row, uptime()))
            getattr(self, row)()
        self.res["machine"]["loadavg_end"] = os.getloadavg()
        self.res["elapsed"] = time.monotonic() - t_start


# ------------------------------------------------------------------ report

def fmt(x):
    return "{:,.0f}".format(x)


def mb(x):
    return "%.0f MB" % (x / 1e6) if x < 1e9 else "%.2f GB" % (x / 1e9)


def part_growth(b, g):
    a = b.a
    lines = ["| rows already stored | table + indexes | events/s, median of %d | all runs | ratio to empty | WAL per blast (median) |" % a.runs,
             "|---|---|---|---|---|---|"]
    for lv in g["levels"]:
        lines.append("| %s | %s | %s | %s | %.2f× | %.0f MB |" % (
            fmt(lv["level"]), mb(lv["table_bytes"]), fmt(lv["median"]),
            " / ".join(fmt(r["rate"]) for r in lv["runs"]), lv["ratio"],
            statistics.median(r["wal_mb"] for r in lv["runs"])))
    top = g["levels"][-1]
    ok = top["ratio"] >= 0.8
    lines.append("")
    lines.append("Target: at %s rows ≥ 0.8× the empty table, same run: **%.2f× — %s**."
                 % (fmt(top["level"]), top["ratio"], "met" if ok else "not met"))
    lines.append("Load average during the blasts (1/5/15 min): %s." % "; ".join(
        r["load"] for lv in g["levels"] for r in lv["runs"][:1]))
    return lines, ok


def part_sustained(b, s):
    a = b.a
    ok_size = s["ratio"] <= 1.3
    ok_dead = s["dead_last_max"] <= max(1.3 * s["dead_mid_max"], 10000)
    lines = [
        "%s events at %g/s (%.0f s), `voipbin.event_retention = '%s'`%s; emitter late > 1 ms: %d frames (max %.1f ms)."
        % (fmt(s["events"]), a.sustained_rate, a.sustained_seconds, a.sustained_retention,
           (", `voipbin.partition_interval = '%s'`" % a.sustained_interval if a.sustained_interval
            else ", `voipbin.partition_interval` at its default (partitions of %s: a quarter of the retention)"
            % s.get("partition_range", "?")) if b.partitioned else "",
           s["late"], s["max_late_ms"]),
        "",
        "| | measured |", "|---|---|",
        "| table + indexes at %.0f s | %s |" % (a.sustained_retention_s, mb(s["bytes_at_mark"])),
        "| largest over the last %.0f s | %s (**%.2f×**, target ≤ 1.3×: %s) |"
        % (a.sustained_retention_s, mb(s["peak_last"]), s["ratio"], "met" if ok_size else "**not met**"),
        "| n_dead_tup: largest from %.0f s to %.0f s / over the last %.0f s / at the end | %s / %s / %s (%s) |"
        % (a.sustained_retention_s, a.sustained_seconds - a.sustained_retention_s, a.sustained_retention_s,
           fmt(s["dead_mid_max"]), fmt(s["dead_last_max"]), fmt(s["dead_end"]),
           "not growing" if ok_dead else "**growing**"),
        "| n_live_tup at the end | %s |" % fmt(s["live_end"]),
        "| events/s the worker stored while the emitter sent (the rate reached) | %s |" % fmt(s["stored_rate"]),
        "| events not stored 5 min after the last frame | %s |" % fmt(s["behind"]),
        "| WAL written | %.2f GB |" % s["wal_gb"],
        "",
        "Every 30 s (t s: size, n_dead_tup, n_live_tup, leaves): " + "; ".join(
            "%.0f: %s, %s, %s, %d" % (x["t"], mb(x["bytes"]), fmt(x["dead"]), fmt(x["live"]), x["partitions"])
            for x in s["samples"]) + ".",
        "Load average at the end: %s." % s["load"]]
    return lines, ok_size and ok_dead


def part_dropday(b, d):
    lines = ["%s rows received in one day (three days ago), %s of table and indexes; then"
             " `voipbin.event_retention = '2d'`, applied at once by the reload." % (fmt(d["rows"]), mb(d["table_bytes"])), ""]
    if "seconds" in d:
        ok = d["seconds"] < 1.0 and d["wal_mb"] < 10
        lines.append("| from the reload until none of the day's rows is left | WAL written | target |")
        lines.append("|---|---|---|")
        lines.append("| %.2f s | %.2f MB | < 1 s and < 10 MB: **%s** |" % (d["seconds"], d["wal_mb"],
                                                                          "met" if ok else "not met"))
    else:
        ok = False
        per10m = 1e7 / d["deleted"]
        lines.append("| rows deleted by retention's batches in %.0f s | WAL | the whole day at that rate | 10 M rows at that rate | target |" % d["window_s"])
        lines.append("|---|---|---|---|---|")
        lines.append("| %s | %.0f MB | %.0f min, %.2f GB of WAL (extrapolated) | %.0f min, %.1f GB of WAL (extrapolated) | < 1 s and < 10 MB: **not met** |"
                     % (fmt(d["deleted"]), d["wal_mb"], d["seconds_projected"] / 60,
                        d["wal_mb_projected"] / 1e3, d["window_s"] * per10m / 60, d["wal_mb"] * per10m / 1e3))
    lines.append("Rows within the retention (yesterday's first hour, today's first minute) left: %s of 2,000. Load average: %s." % (fmt(d["neighbours_left"]), d["load"]))
    return lines, ok


METHODS = """\
How: a throwaway cluster (test/pgcluster.py, fsync on, shared_buffers 128MB, max_wal_size 2GB),
the worker subscribed to bench/emitter.c over TLS on loopback, as in the rows above.
**Prefill** (`bench/prefill.py`): `INSERT … SELECT … generate_series` in chunks of 200,000 rows
from 300 templates of the bench's mix (15 events per call: five `call_*` sharing the call's id,
ten `transcript_created`), `resource_id` and the payload's `id` random-looking UUIDs (md5 of a
counter), so each row has its own dedupe key; handlers' trigger skipped; then `VACUUM (ANALYZE)`
and `CHECKPOINT`. **growth**: the prefill spread over the last 7 days; at each level %(runs)s blasts
of %(events)s new events (each set its own seed, none a duplicate; the rows stay, so a level's
later blasts start with up to %(extra)s more rows), `CHECKPOINT` before each; events/s from the
emitter's first byte to the NOTIFY of the last event, then the rows added must equal the events
sent. **sustained**: the emitter paces the frames; every 5 s the sum over the table's leaves of
`pg_total_relation_size` and of `pg_stat_user_tables.n_dead_tup`; the worker must have stored
everything by the end. **dropday**: WAL = `pg_current_wal_lsn()` difference."""


def write_section(b, path, label, parts):
    """Replaces this label's part of each row in RESULTS.md's scale section,
    keeping everything else in the file."""
    text = open(path).read() if os.path.exists(path) else ""
    if SECTION not in text:
        i = text.find("\n## Raw runs")
        block = "\n" + SECTION + "\n\n" + METHODS % {"runs": b.a.runs, "events": fmt(b.a.events),
                                                     "extra": fmt(b.a.events * (b.a.runs - 1))} + "\n"
        text = text[:i + 1] + block + text[i:] if i >= 0 else text.rstrip("\n") + "\n" + block
    for row, lines in parts:
        begin, end = "<!-- scale %s %s -->" % (row, label), "<!-- /scale %s %s -->" % (row, label)
        m = b.res["machine"]
        body = "\n".join([begin, "### %s — %s" % (row, label), "",
                          "%s; %s; table %s; %s, `nproc` = %d, shared with other helpers' test suites."
                          % (datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), m["code"],
                             "partitioned" if b.partitioned else "not partitioned", m["cpu"], m["nproc"]),
                          ""] + lines + [end])
        if begin in text:
            i, j = text.index(begin), text.index(end) + len(end)
            text = text[:i] + body + text[j:]
        else:
            s = text.index(SECTION)
            nxt = text.find("\n## ", s + len(SECTION))
            at = nxt if nxt >= 0 else len(text)
            text = text[:at].rstrip("\n") + "\n\n" + body + "\n" + text[at:]
    with open(path, "w") as f:
        f.write(text)


def parse_size_s(s):
    n, unit = "".join(ch for ch in s if ch.isdigit()), "".join(ch for ch in s if ch.isalpha())
    return int(n) * {"s": 1, "min": 60, "h": 3600, "": 1}[unit]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run --only growth|sustained|dropday",
                                description="voipbin's scale rows (issue 14)")
    p.add_argument("--only", required=True, help="comma list of " + ", ".join(ROWS))
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (writes nothing)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--events", type=int, default=50000, help="events per growth blast")
    p.add_argument("--levels", default="0,2000000,10000000", help="growth: rows already stored")
    p.add_argument("--sustained-rate", type=float, default=3000)
    p.add_argument("--sustained-seconds", type=float, default=600)
    p.add_argument("--sustained-retention", default="3min")
    p.add_argument("--sustained-interval", default="",
                   help="voipbin.partition_interval of the sustained row (default: the setting's"
                   " default, which the worker shortens to a quarter of the retention)")
    p.add_argument("--drop-rows", type=int, default=10_000_000)
    p.add_argument("--drop-window", type=float, default=180,
                   help="dropday: how long to wait (partitioned) or to measure (not)")
    p.add_argument("--streams", type=int, default=2, help="prefill: connections inserting side by side")
    p.add_argument("--cache", default="/var/tmp/voipbin-bench",
                   help="where the sustained row keeps its frames file between runs")
    p.add_argument("--label", default="current", help="which part of the results this run replaces")
    p.add_argument("--out", help="results file (default bench/RESULTS.md; none with --quick)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--workdir", required=True)
    p.add_argument("--emitter", required=True)
    a, _ = p.parse_known_args(argv)
    a.rows = [r for r in a.only.split(",") if r in ROWS]
    if a.quick:
        a.runs, a.events, a.levels = 1, 5000, "0,20000,100000"
        a.sustained_rate, a.sustained_seconds, a.sustained_retention = 1000, 90, "30s"
        a.drop_rows, a.drop_window = 200_000, 60
    a.levels = [int(x) for x in a.levels.split(",")]
    a.sustained_retention_s = parse_size_s(a.sustained_retention)
    if a.out is None and not a.quick:
        a.out = os.path.join(HERE, "RESULTS.md")
    return a


def main(argv):
    a = parse_args(argv)
    b = Scale(a)
    try:
        b.run()
        parts = []
        for row in a.rows:
            lines, ok = globals()["part_" + row](b, b.res[row])
            print("\n".join(["", "### " + row] + lines))
            parts.append((row, lines))
        if a.out:
            write_section(b, a.out, a.label, parts)
            print("written: %s" % a.out)
        with open(os.path.join(a.workdir, "scale.json"), "w") as f:
            json.dump(b.res, f, default=str)
    except B.BenchError as e:
        log("FAILED: %s" % e)
        return 1
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
