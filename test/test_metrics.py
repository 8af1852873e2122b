"""examples/postgres_exporter.yaml in Debian's prometheus-postgres-exporter:
the real exporter, run against the session's cluster, serves what
voipbin_status() and the tables say at that moment; and the grants
docs/operations.md#monitoring gives a monitoring role are enough."""
import math
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from helpers import call, subscribe
from pgcluster import free_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERIES = os.path.join(ROOT, "examples", "postgres_exporter.yaml")
EXPORTER = shutil.which("prometheus-postgres-exporter") or "/usr/bin/prometheus-postgres-exporter"
STATES = ["disabled", "connecting", "connected", "backoff", "unauthorized", "standby", "retrying"]
DOC = os.path.join(ROOT, "docs", "operations.md")


def documented_grants():
    """The SQL block of docs/operations.md#prometheus-postgres_exporter that
    makes the monitoring role `prometheus`, as it is written there."""
    with open(DOC) as f:
        page = f.read()
    section = page[page.index("### Prometheus: postgres_exporter"):]
    block = re.search(r"```sql\n(CREATE ROLE prometheus.*?)```", section, re.S)
    assert block, "no grants block in the Prometheus section of docs/operations.md"
    return block.group(1)


pytestmark = pytest.mark.skipif(not os.access(EXPORTER, os.X_OK),
                                reason="prometheus-postgres-exporter is not installed (test/install-deps.sh)")


def exporter_flags():
    """The long flags `--help` lists (the --no- forms of its --[no-]collector.x ones too)."""
    out = subprocess.run([EXPORTER, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=30).stdout
    flags = set()
    for m in re.finditer(r"--(\[no-\])?([a-z0-9][a-z0-9.\-]*)", out):
        flags.add("--" + m.group(2))
        if m.group(1):
            flags.add("--no-" + m.group(2))
    return flags


class Exporter:
    """prometheus-postgres-exporter on 127.0.0.1:<free port>, with the example's
    queries only (its own metrics off), connected over the cluster's socket."""

    def __init__(self, cluster, user, tmp_path):
        self.port = free_port()
        self.log = open(os.path.join(str(tmp_path), "exporter-%s-%d.log" % (user, self.port)), "w+")
        env = dict(os.environ, DATA_SOURCE_NAME="host=%s port=%d user=%s dbname=%s sslmode=disable"
                   % (cluster.sock, cluster.port, user, cluster.dbname))
        self.proc = subprocess.Popen(
            [EXPORTER, "--extend.query-path=" + QUERIES,
             "--web.listen-address=127.0.0.1:%d" % self.port]
            # its own metrics off, with the flags this version has (newer
            # ones renamed and dropped some collectors)
            + [f for f in ("--disable-default-metrics", "--disable-settings-metrics",
                           "--no-collector.database", "--no-collector.bgwriter")
               if f in exporter_flags()],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=20, what="the exporter's /metrics")

    def _answers(self):
        assert self.proc.poll() is None, "the exporter exited: %s" % self.read_log()
        try:
            return self.scrape_text()
        except OSError:
            return None

    def scrape_text(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=10) as r:
            return r.read().decode()

    def scrape(self):
        """{'name{labels}': value} of every sample but the exporter's own Go/process ones."""
        out = {}
        for line in self.scrape_text().splitlines():
            if not line or line.startswith("#") or line.startswith(("go_", "process_", "promhttp_")):
                continue
            m = re.match(r"^(\S+)\s+(\S+)$", line)
            assert m, line
            # the exporter labels each series with the server it read: not ours
            name = re.sub(r'server="[^"]*",?', "", m.group(1)).replace(",}", "}").replace("{}", "")
            out[name] = float(m.group(2))
        return out

    def read_log(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def epoch(cur, expr):
    cur.execute("SELECT extract(epoch FROM (%s))::float8" % expr)
    v = cur.fetchone()[0]
    return math.nan if v is None else v


def expected(cluster):
    """What the example's metrics must be, read from the database now."""
    conn = cluster.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT state, frames_received, events_stored, duplicates, dead_letters,"
                    " reconnects, frames_lost, webhook_received, webhook_refused, buffered_bytes,"
                    " failures, worker_pid, webhook_state,"
                    " extract(epoch FROM connected_since)::float8, extract(epoch FROM last_frame_at)::float8,"
                    " extract(epoch FROM last_gap_at)::float8, extract(epoch FROM next_attempt_at)::float8"
                    " FROM voipbin_status()")
        s = cur.fetchone()
        want = {'voipbin_worker_state{state="%s"}' % st: float(st == s[0]) for st in STATES}
        nan = lambda v: math.nan if v is None else float(v)  # noqa: E731
        want.update({
            "voipbin_worker_frames_received_total": s[1],
            "voipbin_worker_events_stored_total": s[2],
            "voipbin_worker_duplicates_total": s[3],
            "voipbin_worker_dead_letters_total": s[4],
            "voipbin_worker_reconnects_total": s[5],
            "voipbin_worker_frames_lost_total": s[6],
            "voipbin_worker_webhook_received_total": s[7],
            "voipbin_worker_webhook_refused_total": s[8],
            "voipbin_worker_buffered_bytes": s[9],
            "voipbin_worker_failures": s[10],
            "voipbin_worker_running": float(s[11] is not None),
            "voipbin_worker_webhook_listening": float(s[12].startswith("listening")),
            "voipbin_worker_connected_since_seconds": nan(s[13]),
            "voipbin_worker_last_frame_timestamp_seconds": nan(s[14]),
            "voipbin_worker_last_gap_timestamp_seconds": nan(s[15]),
            "voipbin_worker_next_attempt_timestamp_seconds": nan(s[16]),
        })
        cur.execute("SELECT count(*) FILTER (WHERE repaired_at IS NULL),"
                    " count(*) FILTER (WHERE repaired_at IS NOT NULL), count(error),"
                    " coalesce(sum(events_repaired), 0), coalesce(sum(frames_lost), 0),"
                    " extract(epoch FROM min(started_at) FILTER (WHERE repaired_at IS NULL))::float8"
                    " FROM voipbin_gaps")
        g = cur.fetchone()
        want.update({"voipbin_gaps_open": g[0], "voipbin_gaps_repaired": g[1],
                     "voipbin_gaps_with_error": g[2], "voipbin_gaps_events_repaired": g[3],
                     "voipbin_gaps_frames_lost": g[4], "voipbin_gaps_oldest_open_timestamp_seconds": nan(g[5])})
        cur.execute("SELECT count(*), extract(epoch FROM min(received_at))::float8 FROM voipbin_dead_letters")
        d = cur.fetchone()
        want.update({"voipbin_dead_letters_rows": d[0], "voipbin_dead_letters_oldest_timestamp_seconds": nan(d[1])})
        cur.execute("SELECT journal_id, extract(epoch FROM updated_at)::float8,"
                    " extract(epoch FROM alive_at)::float8 FROM voipbin_journal")
        for jid, stored_at, alive_at in cur.fetchall():
            want['voipbin_journal_stored_timestamp_seconds{journal_id="%s"}' % jid] = nan(stored_at)
            want['voipbin_journal_alive_timestamp_seconds{journal_id="%s"}' % jid] = nan(alive_at)
        return {k: float(v) for k, v in want.items()}
    finally:
        conn.close()


def same(got, want):
    """got holds every wanted sample with its value (NaN equal to NaN; times to
    the microsecond, which a float64 of epoch seconds keeps)."""
    for k, v in want.items():
        if k not in got:
            return False
        g = got[k]
        if math.isnan(v) != math.isnan(g) or (not math.isnan(v) and abs(g - v) > 1e-5):
            return False
    return True


def scrape_matches(exporter, cluster):
    """Polls until a scrape equals the database read right after it (the
    worker's 15-second alive_at may move between the two); returns both."""
    seen = {}

    def check():
        seen["got"] = exporter.scrape()
        seen["want"] = expected(cluster)
        return same(seen["got"], seen["want"])
    try:
        wait_until(check, timeout=30, interval=0.2, what="a scrape equal to voipbin_status()")
    except AssertionError:
        diff = {k: (seen["got"].get(k), v) for k, v in seen["want"].items()
                if not same(seen["got"], {k: v})}
        raise AssertionError("scraped != database (got, want): %r\nexporter log:\n%s"
                             % (diff, exporter.read_log()))
    return seen["got"], seen["want"]


def make_it_work(cluster, fake, topic):
    """Counters off zero: events, a duplicate, a dead letter, a reconnect and
    its gap (repaired over REST)."""
    subscribe(cluster, fake, topic + "call:call_")
    before = cluster.status()
    ringing = call(fake, "ringing")
    fake.publish("call_ringing", ringing)
    fake.publish("call_ringing", ringing)                       # a duplicate
    fake.publish("call_hangup", call(fake, "hangup"))
    fake.send(text="this is no JSON")                           # a dead letter
    cluster.wait_status(lambda s: s["events_stored"] - before["events_stored"] >= 2
                        and s["duplicates"] - before["duplicates"] >= 1
                        and s["dead_letters"] - before["dead_letters"] >= 1, what="frames stored")
    gaps = cluster.query_one("SELECT count(*) FROM voipbin_gaps")[0]
    cluster.execute("SELECT voipbin_reconnect()")
    cluster.wait_status(lambda s: s["state"] == "connected" and s["reconnects"] > before["reconnects"],
                        what="connected again")
    wait_until(lambda: cluster.query_one("SELECT count(*) FROM voipbin_gaps WHERE repaired_at IS NOT NULL"
                                         " OR error IS NOT NULL")[0] > gaps, timeout=30,
               what="the gap repaired")


def test_exporter_serves_voipbin_status(vb, fake, topic, tmp_path):
    make_it_work(vb, fake, topic)
    exporter = Exporter(vb, "postgres", tmp_path)
    try:
        got, want = scrape_matches(exporter, vb)
        text = exporter.scrape_text()
    finally:
        exporter.stop()
    # one series per state, the current one 1
    assert got['voipbin_worker_state{state="connected"}'] == 1
    assert sum(got['voipbin_worker_state{state="%s"}' % st] for st in STATES) == 1
    for name in ("frames_received_total", "events_stored_total", "duplicates_total",
                 "dead_letters_total", "reconnects_total"):
        assert got["voipbin_worker_" + name] >= 1, name
    assert got["voipbin_gaps_repaired"] + got["voipbin_gaps_with_error"] >= 1
    assert got["voipbin_dead_letters_rows"] >= 1
    assert not math.isnan(got["voipbin_worker_last_frame_timestamp_seconds"])
    # every query of the file ran: no error of a query, counters typed as such
    assert got.get("pg_exporter_last_scrape_error") == 0, text
    assert got.get("pg_up") == 1
    assert "# TYPE voipbin_worker_events_stored_total counter" in text
    assert "# TYPE voipbin_worker_buffered_bytes gauge" in text


def test_monitoring_role_needs_only_the_documented_grants(vb, fake, topic, tmp_path):
    make_it_work(vb, fake, topic)
    grants = documented_grants()
    vb.execute("DROP ROLE IF EXISTS prometheus")
    try:
        # the role alone, without its grants on the tables: those queries
        # fail, and the scrape says so
        vb.execute("CREATE ROLE prometheus LOGIN")
        exporter = Exporter(vb, "prometheus", tmp_path)
        try:
            got = exporter.scrape()
            log = exporter.read_log()
        finally:
            exporter.stop()
        assert got["pg_exporter_last_scrape_error"] == 1
        assert "voipbin_worker_events_stored_total" in got and "voipbin_gaps_open" not in got
        assert "permission denied for table voipbin_gaps" in log, log

        vb.execute("DROP ROLE prometheus")
        vb.execute(grants)      # the documented block, verbatim
        exporter = Exporter(vb, "prometheus", tmp_path)
        try:
            got, _ = scrape_matches(exporter, vb)
            assert got.get("pg_exporter_last_scrape_error") == 0
            log = exporter.read_log()
        finally:
            exporter.stop()
        assert "permission denied" not in log, log
    finally:
        if vb.query_one("SELECT 1 FROM pg_roles WHERE rolname = 'prometheus'"):
            vb.execute("DROP OWNED BY prometheus; DROP ROLE prometheus")
