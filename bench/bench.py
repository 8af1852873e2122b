#!/usr/bin/python3
"""Issue 5's benchmark: the extension against the Python ways of doing the
same job, and against PostgreSQL's own COPY, on one throwaway cluster.
Run it through bench/run (which builds and installs the extension and the
emitter first); `bench/run --help` lists the options.

What is measured, and how, is written into the results file (bench/RESULTS.md)
next to the numbers; in short:
  * throughput: the emitter (bench/emitter.c) pushes N pre-built frames as
    fast as the client reads them; time from its first byte sent to the
    arrival of the NOTIFY of the stream's last event (a call_hangup) at a
    separate LISTEN client; then count(*) must equal N;
  * COPY ceilings: the same rows, pre-built, COPYed in batches into the same
    table definition, plain or with the two NOTIFYs per row;
  * latency: frames paced at --latency-rate; the emitter records each frame's
    send time, a LISTEN client each notification's arrival;
  * idle CPU: the worker's utime+stime from /proc while connected and idle;
  * memory: the worker's RssAnon from /proc, sampled every 10 ms during a
    burst, with voipbin.buffer_limit at its default and at --small-buffer.
"""
import argparse
import io
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test"))
sys.path.insert(0, HERE)

from pgcluster import Cluster, free_port, wait_until  # noqa: E402
from fakeserver_fixture import make_certs  # noqa: E402
import events  # noqa: E402
from batched_client import STAGE_DDL, STORE_SQL, copy_line  # noqa: E402

PY = "/usr/bin/python3"
ACCESSKEY = "vb_BenchAccessKey0123456789abcdef"
WEBHOOK_SECRET = "bench-webhook-secret"
PLAIN = "bench.voipbin_events"
EXT = "public.voipbin_events"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WHAT_WAS_TRIED = "## What was tried"
SCALE_SECTION = "## Scale: "    # bench/scale.py's rows (issue 14): kept as they are
JOURNAL_COST = "## The journal's cost"  # a hand-written record of a --baseline-so run: kept too
REDESIGN_COST = "## The redesign's cost"  # the same, for the tree's redesign: kept too
REQUESTS_COST = "## The requests' cost"  # a hand-written record of --only requests runs: kept too

# "COPY + 2 NOTIFY", second way: a statement trigger over the COPYed rows
# (payload built from the stored jsonb, as nothing else is left of the frame)
NOTIFY_TRIGGER_FN = """
CREATE FUNCTION bench.notify_new_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM CASE WHEN event_type ~ '^[a-z][a-z0-9_]{0,62}$' THEN pg_notify(event_type, payload) END,
            pg_notify('voipbin_events', payload)
    FROM (SELECT event_type,
                 CASE WHEN octet_length(head) + octet_length(body) + 11 <= 7900
                      THEN head || ', "data": ' || body || '}'
                      ELSE head || ', "truncated": true}' END AS payload
          FROM (SELECT event_type, data::text AS body,
                       '{"id": ' || id || ', "event_type": ' || to_json(event_type)
                       || ', "resource_id": ' || coalesce('"' || resource_id || '"', 'null') AS head
                FROM new_events) h) n;
    RETURN NULL;
END
$$
"""
NOTIFY_TRIGGER = ("CREATE TRIGGER bench_notify AFTER INSERT ON %s REFERENCING NEW TABLE AS new_events"
                  " FOR EACH STATEMENT EXECUTE FUNCTION bench.notify_new_events()")


class BenchError(RuntimeError):
    pass


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ------------------------------------------------------------------ processes

class Proc:
    """A child process with a deadline-bounded line reader on its stdout."""

    def __init__(self, name, args, logfile):
        with open(logfile, "ab") as err:
            self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=err, close_fds=True)
        self.name, self.pid, self.buf, self.logfile = name, self.p.pid, b"", logfile

    def read_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("%s: no output within %.0f s (log: %s)" % (self.name, timeout, self.logfile))
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError("%s exited (rc=%s) before answering (log: %s)"
                                     % (self.name, self.p.wait(), self.logfile))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def read_json(self, timeout):
        return json.loads(self.read_line(timeout))

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("%s did not exit within %.0f s" % (self.name, timeout))


class Procs:
    """Every process the bench starts, so that each is stopped by its PID."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []
        self.pidfile = os.path.join(workdir, "pids")

    def start(self, name, args):
        p = Proc(name, args, os.path.join(self.workdir, name + ".log"))
        self.procs.append(p)
        with open(self.pidfile, "a") as f:
            f.write("%d %s\n" % (p.pid, name))
        return p

    def stop(self, p, timeout=5.0):
        if p.p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.p.wait(timeout)
            except ProcessLookupError:
                pass
        if p.p.stdout:
            p.p.stdout.close()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            self.stop(p)


def cpu_ticks(pid):
    """utime + stime of a whole process (all its threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def thread_ticks(pid):
    """{tid: (name, utime + stime)} of each thread of a process."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        out[tid] = (s[s.index("(") + 1:s.rindex(")")], int(rest[11]) + int(rest[12]))
    return out


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ emitter

class Emitter:
    def __init__(self, procs, binary, certs, ping_interval):
        self.procs, self.binary, self.certs = procs, binary, certs
        self.proc = procs.start("emitter", [binary, "serve", "--cert", certs["server"],
                                            "--key", certs["server_key"],
                                            "--ping-interval", str(ping_interval),
                                            "--customer-id", events.CUSTOMER_ID])
        self.pid = self.proc.pid
        ports = self.proc.read_json(10)
        self.port = ports["port"]
        self.api_url = "https://127.0.0.1:%d/v1.0" % self.port
        self.ws_url = "wss://127.0.0.1:%d/v1.0/ws" % self.port
        self.sock = socket.create_connection(("127.0.0.1", ports["control_port"]), timeout=60)
        self.rf = self.sock.makefile("r")
        self.loaded = None

    def cmd(self, line):
        self.sock.sendall((line + "\n").encode())
        reply = json.loads(self.rf.readline())
        if not reply.get("ok"):
            raise BenchError("emitter %r: %s" % (line, reply.get("error")))
        return reply

    def status(self):
        return self.cmd("status")

    def wait(self, pred, timeout, what):
        holder = {}

        def check():
            holder["s"] = self.status()
            return pred(holder["s"])
        try:
            wait_until(check, timeout, interval=0.01, what=what)
        except AssertionError as e:
            raise BenchError("%s; emitter: %s" % (e, json.dumps(holder.get("s"))[:1500]))
        return holder["s"]

    @staticmethod
    def ws_conns(st):
        return [c for c in st["conns"] if c["state"] == "ws"]

    def wait_one_subscriber(self, topics, timeout=20):
        return self.wait(lambda s: len(self.ws_conns(s)) == 1 and self.ws_conns(s)[0]["topics"] >= topics,
                         timeout, "exactly one connection subscribed to %d topic(s)" % topics)

    def wait_no_subscriber(self, timeout=20):
        return self.wait(lambda s: not self.ws_conns(s), timeout, "no WebSocket connection")

    def load(self, path):
        if self.loaded != path:
            self.cmd("load " + path)
            self.loaded = path

    def wait_job(self, timeout):
        st = self.wait(lambda s: s["job"]["state"] in ("done", "failed"), timeout, "emitter job end")
        if st["job"]["state"] != "done":
            raise BenchError("emitter job failed: %s" % st["job"]["error"])
        return st["job"]


# ------------------------------------------------------------------ event sets

class FrameSet:
    def __init__(self, workdir, name, n, seed, shape="raw"):
        self.shape = shape
        self.frames = events.reshape(events.generate(n, seed), shape)
        self.n = len(self.frames)
        self.path = os.path.join(workdir, name + ".frames")
        events.write_frames(self.path, self.frames)
        self.bytes = sum(len(f[3].encode()) for f in self.frames)
        self.last_rid = self.frames[-1][2]
        self.index = {(f[0], f[2]): i for i, f in enumerate(self.frames)}

    def describe(self):
        calls = sum(1 for f in self.frames if f[1] == "call")
        return "%d events (%d call_*, %d transcript_created), %.1f MB of frames" % (
            self.n, calls, self.n - calls, self.bytes / 1e6)


def code_version():
    """The commit measured, and which of the extension's files differ from it."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True,
                                  text=True, timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""
    head = git("log", "-1", "--format=%h %s").strip()
    dirty = [l[3:] for l in git("status", "--porcelain", "--", "src", "Makefile", "voipbin--1.0.sql",
                                "voipbin.control").splitlines()]
    if not head:
        return "unknown (no git)"
    return "commit %s%s" % (head, " + uncommitted changes in " + ", ".join(dirty) if dirty else "")


# ------------------------------------------------------------------ the bench

def median(xs):
    return statistics.median(xs) if xs else None


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Bench:
    def __init__(self, args):
        self.a = args
        self.workdir = args.workdir
        self.procs = Procs(self.workdir)
        self.cluster = None
        self.em = None
        self.res = {"runs": {}, "notes": []}

    # -------------------------------------------------------------- setup

    def setup(self):
        a = self.a
        log("generating event sets")
        self.main = FrameSet(self.workdir, "main", a.events, 1)
        # the same events in the other shapes (the raw set is self.main)
        self.shaped = {"raw": self.main}
        for shape in a.shapes:
            if shape != "raw":
                self.shaped[shape] = FrameSet(self.workdir, "main-" + shape, a.events, 1, shape)
        self.seed_set = FrameSet(self.workdir, "seed", max(a.seed_events, 1), 2)
        self.lat_set = FrameSet(self.workdir, "latency", int(a.latency_rate * a.latency_seconds), 3)
        self.burst = FrameSet(self.workdir, "burst", a.burst_events, 4)
        self.replay_set = None
        if a.only is None or "replay" in a.only.split(","):
            self.replay_set = FrameSet(self.workdir, "replay", a.replay_events, 5)

        self.start_servers(a.ping_interval, a.fsync)
        c = self.cluster
        # The plain copy: same columns, defaults and indexes, its own sequence, no
        # trigger.  Like the partition the extension writes into now, not like
        # the partitioned table: the indexes are the partitions' (a partitioned
        # table can have no unique dedupe index), and a copy of the parent alone
        # would have none, which measured the other clients against a table
        # without a single index.
        part = c.query_one("SELECT voipbin_partition_for(now(), current_setting('voipbin.partition_interval')::interval)::text")[0]
        c.execute("CREATE SCHEMA bench")
        c.execute("CREATE SEQUENCE bench.voipbin_events_id_seq")
        c.execute("CREATE TABLE %s (LIKE %s INCLUDING ALL)" % (PLAIN, part))
        c.execute("ALTER TABLE %s ALTER COLUMN id SET DEFAULT nextval('bench.voipbin_events_id_seq')"
                  % PLAIN)
        c.execute(NOTIFY_TRIGGER_FN)
        ext_idx, plain_idx = self.index_defs(part), self.index_defs(PLAIN)
        if ext_idx != plain_idx or not ext_idx:
            raise BenchError("the plain copy's indexes differ: %r vs %r" % (ext_idx, plain_idx))
        self.res["indexes"] = ext_idx
        self.res["like_partition"] = part
        self.res["ext_triggers"] = [r[0] for r in c.query(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (EXT,))]
        self.dsn = "host=%s port=%d dbname=%s user=postgres" % (c.sock, c.port, c.dbname)

        # the library measured, and the baseline's (built elsewhere) to compare with
        self.lib_path = os.path.join(subprocess.check_output(["pg_config", "--pkglibdir"], text=True).strip(),
                                     "voipbin.so")
        self.libs = {"current": os.path.join(self.workdir, "voipbin-current.so")}
        shutil.copyfile(self.lib_path, self.libs["current"])
        if a.baseline_so:
            self.libs["baseline"] = a.baseline_so
        self.lib_in_use = "current"

        # the worker: pointed at the emitter, subscribed as a user would
        self.point_worker()
        for t in events.TOPICS:
            c.execute("SELECT voipbin_subscribe(%s)", (t,))
        self.em.wait_one_subscriber(len(events.TOPICS))
        c.wait_status(lambda s: s["state"] == "connected", what="worker connected")
        self.check_classification()
        self.collect_machine()

    def start_servers(self, ping_interval, fsync, **conf):
        """The certificates and the token file, the emitter, and a throwaway
        cluster (extra settings: conf) with the extension created."""
        self.certs = make_certs(os.path.join(self.workdir, "certs"))
        self.token_file = os.path.join(self.workdir, "token")
        with open(self.token_file, "w") as f:
            f.write(ACCESSKEY + "\n")
        os.chown(self.token_file, *self._postgres_ids())
        os.chmod(self.token_file, 0o600)

        log("starting the emitter")
        self.em = Emitter(self.procs, self.a.emitter, self.certs, ping_interval)

        log("starting a throwaway cluster (fsync=%s)" % fsync)
        settings = {
            "fsync": fsync,
            "max_wal_size": "'2GB'",
            "log_checkpoints": "on",
            "voipbin.reconnect_min_delay": "'100ms'",
            "voipbin.reconnect_max_delay": "'1s'",
        }
        settings.update(conf)
        self.cluster = Cluster(settings, dbname="voipbin_bench")
        with open(os.path.join(self.workdir, "cluster_dir"), "w") as f:
            f.write(self.cluster.dir + "\n")
        self.cluster.start()
        self.cluster.execute("CREATE EXTENSION voipbin")

    @staticmethod
    def _postgres_ids():
        import pwd
        pw = pwd.getpwnam("postgres")
        return pw.pw_uid, pw.pw_gid

    def index_defs(self, table):
        return sorted(r[0] for r in self.cluster.query(
            "SELECT regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')"
            " FROM pg_index WHERE indrelid = %s::regclass", (table,)))

    def check_classification(self):
        """The Python clients must store the rows the extension stores."""
        sample = self.main.frames[:400]
        conn = self.cluster.connect()
        with conn.cursor() as cur:
            for et, resource, rid, text in sample:
                cur.execute("SELECT event_type, resource, resource_id::text, customer_id::text"
                            " FROM voipbin_classify(%s)", (text,))
                got = cur.fetchone()
                mine = events.classify(json.loads(text))
                want = (mine[0], mine[1], mine[2].get("id"), mine[2].get("customer_id"))
                if tuple(got) != want or want[0] != et:
                    raise BenchError("classification differs: extension %r, bench %r" % (got, want))
        conn.close()

    def collect_machine(self):
        mem = cpu = "?"
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        settings = {}
        for name in ("fsync", "synchronous_commit", "shared_buffers", "wal_level", "max_wal_size",
                     "checkpoint_timeout", "work_mem"):
            settings[name] = self.cluster.query_one("SHOW %s" % name)[0]
        self.res["machine"] = {
            "nproc": os.cpu_count(), "memory": mem, "cpu": cpu,
            "kernel": platform.release(),
            "debian": open("/etc/debian_version").read().strip() if os.path.exists("/etc/debian_version") else "?",
            "pg": self.cluster.query_one("SELECT version()")[0],
            "settings": settings,
            "loadavg_start": os.getloadavg(),
            "python": platform.python_version(),
            "code": code_version(),
        }

    # -------------------------------------------------------------- worker

    def use_library(self, which):
        """This build's voipbin.so or the baseline's in place (the cluster restarts to load it)."""
        if which == self.lib_in_use:
            return
        self.cluster.stop("fast")
        shutil.copyfile(self.libs[which], self.lib_path)
        self.lib_in_use = which
        self.cluster.start()
        self.worker_on()

    def point_worker(self):
        self.cluster.set_conf(voipbin__api_url=self.em.api_url,
                              voipbin__ca_file=self.certs["ca"],
                              voipbin__token_file=self.token_file)

    def worker_on(self):
        self.point_worker()
        self.em.wait_one_subscriber(len(events.TOPICS))
        self.cluster.wait_status(lambda s: s["state"] == "connected", what="worker connected")

    def worker_off(self):
        self.cluster.set_conf(voipbin__token_file=None)
        self.cluster.wait_status(lambda s: s["state"] == "disabled", what="worker disabled")
        self.em.wait_no_subscriber()

    # -------------------------------------------------------------- helpers

    def reset_table(self, table):
        self.cluster.execute("TRUNCATE %s" % table)
        self.cluster.execute("CHECKPOINT")

    def count(self, table):
        return self.cluster.query_one("SELECT count(*) FROM %s" % table)[0]

    def start_end_listener(self, fs, timeout):
        lst = self.procs.start("listener-end", [
            PY, os.path.join(HERE, "listener.py"), "end", "--dsn", self.dsn,
            "--channel", "call_hangup", "--resource-id", fs.last_rid, "--timeout", str(timeout)])
        if lst.read_line(15) != "ready":
            raise BenchError("listener did not start")
        return lst

    def stream(self, fs, table):
        """Blast fs at the one subscribed client; events/s to the last commit."""
        timeout = 60 + fs.n / 100
        lst = self.start_end_listener(fs, timeout)
        try:
            cpu0, wall0 = cpu_ticks(self.em.pid), time.monotonic()
            self.em.cmd("blast")
            end = lst.read_json(timeout + 5)
            if "end_ns" not in end:
                raise BenchError("the last event's NOTIFY never arrived (%s)" % end)
            job = self.em.wait_job(30)
            cpu1, wall1 = cpu_ticks(self.em.pid), time.monotonic()
        finally:
            self.procs.stop(lst)
        n = self.count(table)
        if n != fs.n:
            raise BenchError("%s holds %d rows, %d were sent" % (table, n, fs.n))
        secs = (end["end_ns"] - job["t_first_ns"]) / 1e9
        return {"rate": fs.n / secs, "seconds": secs,
                "emitter_send_seconds": (job["t_last_ns"] - job["t_first_ns"]) / 1e9,
                "emitter_cpu_pct": 100.0 * (cpu1 - cpu0) / CLK_TCK / (wall1 - wall0)}

    def start_client(self, script, fs_n, extra=()):
        name = os.path.splitext(os.path.basename(script))[0]
        proc = self.procs.start(name, [PY, os.path.join(HERE, script), "--url", self.em.ws_url,
                                       "--ca", self.certs["ca"], "--dsn", self.dsn,
                                       "--table", PLAIN, "--count", str(fs_n)] + list(extra))
        self.em.wait_one_subscriber(len(events.TOPICS))
        return proc

    def finish_client(self, proc):
        try:
            out = proc.read_json(30)
            proc.wait(10)
            return out
        finally:
            self.procs.stop(proc)

    def add(self, key, value):
        self.res["runs"].setdefault(key, []).append(value)

    # -------------------------------------------------------------- scenarios

    def emitter_ceiling(self):
        fs = self.burst
        self.em.load(fs.path)
        sink = self.procs.start("sink", [self.a.emitter, "sink", "--port", str(self.em.port),
                                         "--ca", self.certs["ca"], "--count", str(fs.n)])
        try:
            if sink.read_line(15) != "ready":
                raise BenchError("sink did not start")
            self.em.wait_one_subscriber(1)
            cpu0, wall0 = cpu_ticks(self.em.pid), time.monotonic()
            self.em.cmd("blast")
            out = sink.read_json(120)
            job = self.em.wait_job(30)
            cpu1, wall1 = cpu_ticks(self.em.pid), time.monotonic()
            sink.wait(10)
        finally:
            self.procs.stop(sink)
        secs = (out["last_ns"] - job["t_first_ns"]) / 1e9
        self.add("emitter_ceiling", {"rate": fs.n / secs, "mbps": out["bytes"] / secs / 1e6,
                                     "emitter_cpu_pct": 100.0 * (cpu1 - cpu0) / CLK_TCK / (wall1 - wall0)})
        self.em.wait_no_subscriber()

    def throughput_extension(self, key="tp_extension", fs=None):
        fs = fs or self.main
        self.worker_on()
        self.reset_table(EXT)
        self.em.load(fs.path)
        before = self.cluster.status()
        pid = before["worker_pid"]
        ticks0 = thread_ticks(pid)
        r = self.stream(fs, EXT)
        ticks1 = thread_ticks(pid)
        after = self.cluster.status()
        # CPU per event: what the worker itself spends, whatever else shares the machine
        spent = {t: v[1] - ticks0.get(t, (None, 0))[1] for t, v in ticks1.items()}
        per_1k = 1000.0 / CLK_TCK / (fs.n / 1000.0)
        r["cpu_main_ms_per_1k"] = spent.get(str(pid), 0) * per_1k
        r["cpu_all_ms_per_1k"] = sum(spent.values()) * per_1k
        r["dead_letters"] = after["dead_letters"] - before["dead_letters"]
        r["duplicates"] = after["duplicates"] - before["duplicates"]
        if r["dead_letters"] or r["duplicates"]:
            raise BenchError("the worker dead-lettered or deduplicated events: %r" % r)
        self.add(key, r)

    def journal_replay(self):
        """A journal of replay_events frames left by kill -9 of the worker (the
        table locked while they arrived): how fast the next worker stores them."""
        self.worker_on()
        self.reset_table(EXT)
        fs = self.replay_set
        self.em.load(fs.path)
        c = self.cluster
        locker = c.connect(autocommit=False)
        try:
            locker.cursor().execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % EXT)
            self.em.cmd("blast")
            self.em.wait_job(120 + fs.n / 1000)
            # every frame written to the socket; read and journaled once buffered_bytes
            # (the worker's batch plus the journal past it) has covered the set and stands still
            last = [None, 0]

            def settled(st):
                b = st["buffered_bytes"]
                if b != last[0]:
                    last[0], last[1] = b, time.monotonic()
                return b >= fs.bytes and time.monotonic() - last[1] >= 1.0
            c.wait_status(settled, timeout=300, what="the set in the journal")
            pid = c.status()["worker_pid"]
            os.kill(pid, signal.SIGKILL)
        finally:
            try:
                locker.close()
            except Exception:
                pass
        started = wait_until(lambda: _quiet(lambda: c.query_one(
            "SELECT extract(epoch FROM backend_start)::float8 FROM pg_stat_activity"
            " WHERE backend_type = 'voipbin' AND pid <> %s", (pid,))), timeout=60,
            what="the next worker")[0]
        def replayed():
            n = self.count(EXT)
            if n < fs.n and c.status()["buffered_bytes"] == 0 and n == self.count(EXT):
                raise BenchError("the replay stopped at %d of %d events" % (n, fs.n))
            return n == fs.n
        n = wait_until(lambda: _quiet(replayed), timeout=120 + fs.n / 1000,
                       interval=0.05, what="the journal replayed")
        done = time.time()
        st = c.status()
        if st["duplicates"] or st["dead_letters"] or self.count(EXT) != fs.n:
            raise BenchError("replay stored %d of %d (duplicates %s, dead letters %s)"
                             % (self.count(EXT), fs.n, st["duplicates"], st["dead_letters"]))
        del n
        self.add("replay", {"rate": fs.n / (done - started), "seconds": done - started,
                            "journal_mb": fs.bytes / 1e6})
        # the emitter's connection went with the worker: the next one is the new worker's
        self.em.wait_one_subscriber(len(events.TOPICS), timeout=30)

    def throughput_webhook(self, connections):
        """The main event set's first --webhook-events events, each POSTed as
        VoIPBIN's webhook sender would, to the receiver; one request in
        flight per keep-alive connection, each answered 200 once stored."""
        self.worker_on()
        self.reset_table(EXT)
        frames = self.main.frames[:self.a.webhook_events]
        path = os.path.join(self.workdir, "webhook.frames")
        types = os.path.join(self.workdir, "webhook.types")
        if not os.path.exists(path):
            events.write_frames(path, frames)
            with open(types, "w") as f:
                f.write("\n".join(fr[0] for fr in frames) + "\n")
        port = free_port()
        self.cluster.set_conf(voipbin__webhook_port=port, voipbin__webhook_secret=WEBHOOK_SECRET)
        try:
            self.cluster.wait_status(lambda s: s["webhook_state"].startswith("listening on")
                                     and "secret" not in s["webhook_state"], 20, "receiver listening")
            proc = self.procs.start("webhook_client", [
                PY, os.path.join(HERE, "webhook_client.py"), "--port", str(port),
                "--secret", WEBHOOK_SECRET, "--frames", path, "--types", types,
                "--connections", str(connections)])
            try:
                out = proc.read_json(60 + len(frames) / 20)
                proc.wait(10)
            finally:
                self.procs.stop(proc)
        finally:
            self.cluster.set_conf(voipbin__webhook_port=None, voipbin__webhook_secret=None)
        n = self.count(EXT)
        if out["ok"] != len(frames) or n != len(frames):
            raise BenchError("webhook: %d of %d answered 200 (%r), %d rows"
                             % (out["ok"], len(frames), out["statuses"], n))
        secs = (out["t_last_ns"] - out["t_first_ns"]) / 1e9
        self.add("tp_webhook_%d" % connections, {"rate": n / secs, "seconds": secs})

    def throughput_python(self, key, script, fs):
        self.worker_off()
        self.reset_table(PLAIN)
        self.em.load(fs.path)
        proc = self.start_client(script, fs.n, ["--batch", str(self.a.copy_batch)]
                                 if script == "batched_client.py" else [])
        r = self.stream(fs, PLAIN)
        r["client"] = self.finish_client(proc)
        self.add(key, r)

    def copy_chunks(self, fs):
        """fs's rows for COPY, as the batched client makes them (an envelope's data re-serialised)."""
        if not hasattr(self, "_copy_chunks"):
            self._copy_chunks = {}
        if fs.path not in self._copy_chunks:
            lines = [copy_line(f[3]) for f in fs.frames]
            b = self.a.copy_batch
            self._copy_chunks[fs.path] = ["".join(lines[i:i + b]) for i in range(0, len(lines), b)]
        return self._copy_chunks[fs.path]

    def throughput_copy(self, mode, fs=None, suffix=""):
        """PostgreSQL's ceiling: the pre-built rows COPYed in batches, one
        transaction each.  mode: "plain" (COPY into the table), "staging"
        (COPY into a temp table, then the batched client's INSERT … ON
        CONFLICT + 2 pg_notify statement), "trigger" (COPY into the table, an
        AFTER … FOR EACH STATEMENT trigger sends 2 pg_notify per new row)."""
        fs = fs or self.main
        self.worker_off()
        chunks = self.copy_chunks(fs)
        self.reset_table(PLAIN)
        if mode == "trigger":
            self.cluster.execute(NOTIFY_TRIGGER % PLAIN)
        # the same LISTEN client as in the streaming runs, so the notification
        # queue is kept (and read) the same way
        lst = self.start_end_listener(fs, 600)
        conn = self.cluster.connect(autocommit=False)
        try:
            cur = conn.cursor()
            cur.execute(STAGE_DDL)
            conn.commit()
            store = STORE_SQL.format(table=PLAIN, sequence=PLAIN + "_id_seq")
            bufs = [io.StringIO(c) for c in chunks]
            cols = "%s (event_type, resource, resource_id, customer_id, data)" % PLAIN
            t0 = time.time_ns()
            for buf in bufs:
                if mode == "staging":
                    cur.copy_expert("COPY pg_temp.stage FROM STDIN", buf, size=1 << 20)
                    cur.execute(store)
                else:
                    cur.copy_expert("COPY %s FROM STDIN" % cols, buf, size=1 << 20)
                conn.commit()
            t1 = time.time_ns()
            if mode != "plain":
                end = lst.read_json(60)
                if "end_ns" not in end:
                    raise BenchError("COPY + NOTIFY: the last NOTIFY never arrived")
        finally:
            conn.close()
            self.procs.stop(lst)
            if mode == "trigger":
                self.cluster.execute("DROP TRIGGER bench_notify ON %s" % PLAIN)
        n = self.count(PLAIN)
        if n != fs.n:
            raise BenchError("COPY stored %d rows of %d" % (n, fs.n))
        secs = (t1 - t0) / 1e9
        self.add("tp_copy_" + mode + suffix, {"rate": n / secs, "seconds": secs})

    def latency(self, who, key=None):
        fs = self.lat_set
        table = EXT if who == "extension" else PLAIN
        if who == "extension":
            self.worker_on()
        else:
            self.worker_off()
        self.reset_table(table)
        self.em.load(fs.path)
        proc = (self.start_client("batched_client.py", fs.n, ["--batch", str(self.a.copy_batch)])
                if who == "batched" else None)
        out_file = os.path.join(self.workdir, "latency-%s.txt" % who)
        send_file = os.path.join(self.workdir, "sendtimes-%s.txt" % who)
        lst = self.procs.start("listener-latency", [
            PY, os.path.join(HERE, "listener.py"), "latency", "--dsn", self.dsn,
            "--channel", "voipbin_events", "--count", str(fs.n), "--out", out_file,
            "--timeout", str(self.a.latency_seconds + 120)])
        try:
            if lst.read_line(15) != "ready":
                raise BenchError("listener did not start")
            self.em.cmd("pace %g %s" % (self.a.latency_rate, send_file))
            got = lst.read_json(self.a.latency_seconds + 125)
            if "received" not in got:
                raise BenchError("latency listener: %s" % got)
            job = self.em.wait_job(30)
        finally:
            self.procs.stop(lst)
        if proc:
            self.finish_client(proc)
        with open(send_file) as f:
            sent = [int(x) for x in f]
        lat = []
        with open(out_file) as f:
            for line in f:
                t, et, rid = line.split()
                lat.append((int(t) - sent[fs.index[(et, rid)]]) / 1e6)
        if len(lat) != fs.n:
            raise BenchError("latency: %d notifications for %d events" % (len(lat), fs.n))
        self.add(key or "lat_" + who, {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": max(lat),
                                "n": len(lat), "emitter_late": job["late"],
                                "emitter_max_late_ms": job["max_late_ns"] / 1e6})

    def idle_cpu(self):
        self.worker_on()
        wait_until(lambda: self.cluster.query_one(
            "SELECT count(*) = 0 FROM voipbin_subscriptions WHERE status <> 'active'")[0],
            15, what="topics active")
        pid = self.cluster.status()["worker_pid"]
        st0 = self.em.status()
        th0, t0, w0 = thread_ticks(pid), cpu_ticks(pid), time.monotonic()
        time.sleep(self.a.idle_seconds)         # the measuring window, not a wait for anything
        th1, t1, w1 = thread_ticks(pid), cpu_ticks(pid), time.monotonic()
        per_thread = {"%s/%s" % (th1[k][0], "main" if k == str(pid) else "thread"): th1[k][1] - th0.get(k, ("", 0))[1]
                      for k in th1}
        st1 = self.em.status()
        c0, c1 = self.em.ws_conns(st0)[0], self.em.ws_conns(st1)[0]
        self.add("idle_cpu", {"pct": 100.0 * (t1 - t0) / CLK_TCK / (w1 - w0), "seconds": w1 - w0,
                              "ticks": t1 - t0, "ticks_by_thread": per_thread,
                              "pings_answered": c1["pongs_in"] - c0["pongs_in"]})

    # -------------------------------------------------------------- requests

    def queue_requests(self, n):
        """n GET requests queued in one transaction (safe ones: the emitter
        answers GET /v1.0/calls/<id> with 200 at once)."""
        self.cluster.execute("SELECT voipbin_request('GET', '/calls/' || gen_random_uuid())"
                             " FROM generate_series(1, %s)", (n,))

    def requests_left(self):
        return self.cluster.query_one("SELECT count(*) FROM voipbin_requests"
                                      " WHERE state IN ('queued', 'sending')")[0]

    def throughput_with_requests(self):
        """Ingest while queued requests flow at the full rate: a backlog larger
        than the run can drain, so they flow throughout."""
        rate = 17
        self.cluster.set_conf(voipbin__request_rate=rate, voipbin__repair=False)
        self.cluster.execute("TRUNCATE voipbin_requests")
        served0 = self.em.status()["rest_requests"]
        self.queue_requests(int(rate * (30 + self.main.n / 2000)))
        wait_until(lambda: self.em.status()["rest_requests"] > served0, 30, what="requests flowing")
        self.throughput_extension("tp_extension_requests")
        left = self.requests_left()
        served = self.em.status()["rest_requests"] - served0
        self.cluster.execute("TRUNCATE voipbin_requests")
        if left == 0:
            raise BenchError("the requests ran out before the ingest run ended")
        self.add("requests_during_ingest", {"served": served})
        self.cluster.set_conf(voipbin__request_rate=None, voipbin__repair=None)

    def requests_drain(self, n):
        """How fast a backlog of n queued requests drains at voipbin.request_rate = 17."""
        self.cluster.set_conf(voipbin__request_rate=17, voipbin__repair=False)
        self.point_worker()
        self.cluster.execute("TRUNCATE voipbin_requests")
        t0 = time.monotonic()
        self.queue_requests(n)
        wait_until(lambda: self.requests_left() == 0, 60 + n / 5.0, interval=0.1,
                   what="%d requests sent" % n)
        secs = time.monotonic() - t0
        states = dict(self.cluster.query("SELECT state, count(*) FROM voipbin_requests GROUP BY 1"))
        if states != {"done": n}:
            raise BenchError("the drained requests ended %r" % states)
        self.cluster.execute("TRUNCATE voipbin_requests")
        self.add("requests_drain", {"n": n, "seconds": secs, "rate": n / secs})
        self.cluster.set_conf(voipbin__request_rate=None, voipbin__repair=None)

    def memory_burst(self, limit):
        self.cluster.set_conf(voipbin__buffer_limit=limit)
        self.point_worker()             # with --only memory nothing else turned it on
        # a fresh worker, so that nothing of an earlier burst is still resident
        self.cluster.restart()
        self.em.wait_one_subscriber(len(events.TOPICS), timeout=30)
        self.cluster.wait_status(lambda s: s["state"] == "connected", what="worker connected")
        shown = self.cluster.query_one("SHOW voipbin.buffer_limit")[0]
        self.reset_table(EXT)
        fs = self.burst
        self.em.load(fs.path)
        pid = self.cluster.status()["worker_pid"]
        base = rss_anon_kb(pid)
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], rss_anon_kb(pid))
                except OSError:
                    return
                stop.wait(0.01)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            r = self.stream(fs, EXT)
        finally:
            stop.set()
            th.join()
        self.add("mem_" + ("default" if limit is None else limit),
                 {"setting": shown, "base_kb": base, "peak_kb": peak[0], "after_kb": rss_anon_kb(pid),
                  "rate": r["rate"],
                  "emitter_send_seconds": r["emitter_send_seconds"]})

    # -------------------------------------------------------------- driver

    def run(self):
        a = self.a
        t_start = time.monotonic()
        self.setup()
        only = set(a.only.split(",")) if a.only else None

        def want(x):
            return only is None or x in only
        self.worker_off()
        if want("ceiling"):
            for i in range(a.runs):
                log("emitter ceiling, run %d/%d" % (i + 1, a.runs))
                self.emitter_ceiling()
        if want("throughput") or want("throughput-extension"):
            for i in range(a.runs):
                if a.baseline_so:
                    log("throughput run %d/%d: extension, baseline library" % (i + 1, a.runs))
                    self.use_library("baseline")
                    self.throughput_extension("tp_extension_baseline")
                    self.use_library("current")
                log("throughput run %d/%d: extension" % (i + 1, a.runs))
                self.throughput_extension()
                if not want("throughput"):
                    continue            # throughput-extension: the extension's runs only
                if a.seed_events > 0:       # --seed-events 0: not this slow one (a loaded machine)
                    log("throughput run %d/%d: seed-style Python (%d events)" % (i + 1, a.runs, self.seed_set.n))
                    self.throughput_python("tp_seed", "seed_client.py", self.seed_set)
                log("throughput run %d/%d: batched Python" % (i + 1, a.runs))
                self.throughput_python("tp_batched", "batched_client.py", self.main)
                log("throughput run %d/%d: COPY; COPY + NOTIFY, two ways" % (i + 1, a.runs))
                for mode in ("plain", "staging", "trigger"):
                    self.throughput_copy(mode)
                # the other frame shapes: the extension against the same two, same events
                for shape in a.shapes:
                    if shape == "raw":
                        continue
                    fs, sfx = self.shaped[shape], shape_suffix(shape)
                    log("throughput run %d/%d, %s frames: extension, batched Python, COPY + NOTIFY"
                        % (i + 1, a.runs, shape))
                    self.throughput_extension("tp_extension" + sfx, fs)
                    self.throughput_python("tp_batched" + sfx, "batched_client.py", fs)
                    for mode in ("staging", "trigger"):
                        self.throughput_copy(mode, fs, sfx)
        if want("burst"):
            # a set larger than voipbin.buffer_limit (default): part of it goes through the journal's files
            for i in range(a.runs):
                log("burst run %d/%d (%d events, %.0f MB): extension, batched Python, COPY + NOTIFY"
                    % (i + 1, a.runs, self.burst.n, self.burst.bytes / 1e6))
                self.throughput_extension("tp_extension_burst", self.burst)
                self.throughput_python("tp_batched_burst", "batched_client.py", self.burst)
                for mode in ("staging", "trigger"):
                    self.throughput_copy(mode, self.burst, "_burst")
        if want("requests"):
            for i in range(a.runs):
                log("requests run %d/%d: ingest alone, then with requests at 17/s" % (i + 1, a.runs))
                self.throughput_extension("tp_extension_quiet")
                self.throughput_with_requests()
            log("requests: a backlog of %d queued requests drains" % a.drain_requests)
            self.requests_drain(a.drain_requests)
        if want("webhook"):
            for i in range(a.runs):
                for conns in (1, 8):
                    log("webhook run %d/%d: %d events, %d keep-alive connection(s)"
                        % (i + 1, a.runs, min(a.webhook_events, self.main.n), conns))
                    self.throughput_webhook(conns)
        if want("latency"):
            for i in range(a.runs):
                log("latency run %d/%d at %g events/s: extension, batched Python"
                    % (i + 1, a.runs, a.latency_rate))
                if a.baseline_so:
                    self.use_library("baseline")
                    self.latency("extension", "lat_extension_baseline")
                    self.use_library("current")
                self.latency("extension")
                self.latency("batched")
        if want("replay"):
            for i in range(a.runs):
                log("journal replay run %d/%d: %d frames after kill -9" % (i + 1, a.runs, self.replay_set.n))
                try:
                    self.journal_replay()
                except (BenchError, AssertionError) as e:
                    log("journal replay failed: %s" % e)
                    self.res["notes"].append("journal replay run %d failed: %s" % (i + 1, str(e)[:300]))
        if want("idle"):
            for i in range(a.runs):
                log("idle CPU run %d/%d (%g s)" % (i + 1, a.runs, a.idle_seconds))
                self.idle_cpu()
        if want("memory"):
            for limit in (None, a.small_buffer):
                for i in range(a.runs):
                    log("memory: %d-event burst, buffer_limit %s, run %d/%d"
                        % (self.burst.n, limit or "default", i + 1, a.runs))
                    self.memory_burst(limit)
            self.cluster.set_conf(voipbin__buffer_limit=None)
        self.res["machine"]["loadavg_end"] = os.getloadavg()
        self.res["elapsed"] = time.monotonic() - t_start

    def close(self):
        # the installed library is this build's again, whatever happened
        if getattr(self, "lib_in_use", "current") != "current":
            shutil.copyfile(self.libs["current"], self.lib_path)
        self.procs.stop_all()
        if self.cluster:
            self.cluster.destroy()


# ------------------------------------------------------------------ report

def _quiet(f):
    """f(), or None while the server restarts."""
    try:
        return f()
    except Exception:
        return None


def shape_suffix(shape):
    """Result keys: the raw shape's have none (as before the shapes were measured)."""
    return "" if shape == "raw" else "_" + shape.replace("-", "_")


def fmt_rate(x):
    return "—" if x is None else "{:,.0f}".format(x)


def runs_of(res, key, field):
    return [r[field] for r in res["runs"].get(key, [])]


def report(b):
    """The results as markdown: the table, the targets, how, the machine."""
    res, a = b.res, b.a
    R = res["runs"]

    def med(key, field):
        return median(runs_of(res, key, field))

    def all_runs(key, field, f):
        xs = runs_of(res, key, field)
        return " / ".join(f(x) for x in xs) if len(xs) > 1 else ""

    ms2 = lambda x: "—" if x is None else "%.2f" % x  # noqa: E731
    mb = lambda kb: "—" if kb is None else "%.1f MB" % (kb / 1024)  # noqa: E731

    rows = []
    tp = [("tp_extension", "**extension** (background worker)"),
          ("tp_extension_baseline", "extension, baseline library without the journal (%s)" % a.baseline_label),
          ("tp_seed", "seed-style Python: docs' websocket-client example + INSERT, NOTIFY, COMMIT per event"),
          ("tp_batched", "batched Python: reader thread + COPY to staging + INSERT … ON CONFLICT + 2 NOTIFY, commit per batch"),
          ("tp_copy_plain", "COPY, plain (PostgreSQL's ceiling without NOTIFY; batches of %d rows)" % a.copy_batch),
          ("tp_copy_staging", "COPY + 2 NOTIFY per row, (a): COPY to a staging table, INSERT … SELECT … ON CONFLICT + pg_notify ×2"),
          ("tp_copy_trigger", "COPY + 2 NOTIFY per row, (b): COPY into the table, statement trigger does pg_notify ×2 per new row"),
          ("tp_webhook_1", "webhook receiver: signed POSTs from a keep-alive client (test/webhook_sender.py's), one at a time, each answered 200 once durable"),
          ("tp_webhook_8", "webhook receiver: the same over 8 keep-alive connections at once"),
          ("tp_extension_quiet", "**extension**, no requests queued (the requests runs' baseline)"),
          ("tp_extension_requests", "**extension**, while queued requests are sent at 17/s")]
    for shape in events.SHAPES[1:]:
        sfx = shape_suffix(shape)
        tp += [("tp_extension" + sfx, "**extension**, %s frames" % shape),
               ("tp_batched" + sfx, "batched Python, %s frames" % shape),
               ("tp_copy_staging" + sfx, "COPY + 2 NOTIFY per row (a), %s frames' rows" % shape),
               ("tp_copy_trigger" + sfx, "COPY + 2 NOTIFY per row (b), %s frames' rows" % shape)]
    burst = "%d-event burst (%.0f MB, past the default buffer_limit)" % (b.burst.n, b.burst.bytes / 1e6)
    tp += [("tp_extension_burst", "**extension**, " + burst),
           ("tp_batched_burst", "batched Python, " + burst),
           ("tp_copy_staging_burst", "COPY + 2 NOTIFY per row (a), the burst's rows"),
           ("tp_copy_trigger_burst", "COPY + 2 NOTIFY per row (b), the burst's rows")]
    for key, label in tp:
        if key in R:
            rows.append(("Throughput, events committed/s: " + label, fmt_rate(med(key, "rate")),
                         all_runs(key, "rate", fmt_rate)))
    for key, label in tp:
        if key.startswith("tp_extension") and key in R and "cpu_main_ms_per_1k" in R[key][0]:
            rows.append(("Worker CPU, ms per 1,000 events, main thread (all threads): " + label.split(", ", 1)[-1]
                         if ", " in label else "Worker CPU, ms per 1,000 events, main thread (all threads)",
                         "%.1f (%.1f)" % (med(key, "cpu_main_ms_per_1k"), med(key, "cpu_all_ms_per_1k")),
                         all_runs(key, "cpu_main_ms_per_1k", lambda x: "%.1f" % x)))
    if "tp_extension_quiet" in R and "tp_extension_requests" in R:
        pairs = list(zip(runs_of(res, "tp_extension_requests", "rate"), runs_of(res, "tp_extension_quiet", "rate")))
        rows.append(("Ingest with requests flowing ÷ ingest alone (same go, alternating; ≥ 0.95 aimed)",
                     "%.3f" % median([x / y for x, y in pairs]),
                     " / ".join("%.3f" % (x / y) for x, y in pairs) if len(pairs) > 1 else ""))
    if "requests_drain" in R:
        rows.append(("Queued requests drained at request_rate = 17: %d requests, requests/s (seconds)"
                     % R["requests_drain"][0]["n"],
                     "%.1f (%.1f s)" % (med("requests_drain", "rate"), med("requests_drain", "seconds")), ""))
    for key, label in (("lat_extension", "extension"),
                       ("lat_extension_baseline", "extension, baseline library without the journal"),
                       ("lat_batched", "batched Python")):
        if key in R:
            rows.append(("Latency send→NOTIFY at %g events/s, %s: p50 / p99 (max)" % (a.latency_rate, label),
                         "%s / %s (%s)" % (ms2(med(key, "p50")), ms2(med(key, "p99")), ms2(med(key, "max"))) + " ms",
                         all_runs(key, "p50", ms2) + ("  |  p99: " + all_runs(key, "p99", ms2) if len(R[key]) > 1 else "")))
    if "idle_cpu" in R:
        rows.append(("Worker CPU while connected and idle (%g s windows), %% of one core" % a.idle_seconds,
                     "%.3f %%" % med("idle_cpu", "pct"), all_runs("idle_cpu", "pct", lambda x: "%.3f" % x)))
    for key, label in (("mem_default", "default (%s)"), ("mem_" + a.small_buffer, "%s")):
        if key in R:
            setting = R[key][0]["setting"]
            rows.append(("Worker peak RssAnon, %d-event burst, buffer_limit = %s" % (b.burst.n, label % setting),
                         "%s (idle before: %s, after: %s)" % (mb(med(key, "peak_kb")), mb(med(key, "base_kb")),
                                                              mb(med(key, "after_kb"))),
                         all_runs(key, "peak_kb", mb)))
            rows.append(("  … the burst's throughput (events/s), buffer_limit = %s" % setting,
                         fmt_rate(med(key, "rate")), all_runs(key, "rate", fmt_rate)))
    if "replay" in R:
        rows.append(("Journal replay after `kill -9` of the worker: %d frames (%.0f MB) stored by the next worker, events/s"
                     % (b.replay_set.n, R["replay"][0]["journal_mb"]),
                     fmt_rate(med("replay", "rate")), all_runs("replay", "rate", fmt_rate)))
    if "emitter_ceiling" in R:
        rows.append(("Emitter ceiling: frames/s into a C TLS reader that only counts",
                     "%s (%.0f MB/s)" % (fmt_rate(med("emitter_ceiling", "rate")), med("emitter_ceiling", "mbps")),
                     all_runs("emitter_ceiling", "rate", fmt_rate)))
    if "tp_extension" in R:
        share = [100.0 * r["emitter_send_seconds"] / r["seconds"] for r in R["tp_extension"]]
        rows.append(("Emitter: all frames of an extension throughput run written after … of the run's time",
                     "%.1f %%" % median(share), " / ".join("%.1f %%" % x for x in share) if len(share) > 1 else ""))

    table = ["| measurement | median of %d run(s) | all runs |" % a.runs, "|---|---|---|"]
    table += ["| %s | %s | %s |" % r for r in rows]

    # targets
    targets = ["| target (issues 5, 9, 14) | measured | met? |", "|---|---|---|"]

    def ratio(x, y):
        return None if x is None or y is None or y == 0 else x / y
    ext = med("tp_extension", "rate")
    verdicts = {}
    # issue 14: every frame shape, and a burst past buffer_limit, ≥ 1.5× batched and ≥ 1.2× COPY + NOTIFY
    cases = [(shape_suffix(sh), "%s frames" % sh) for sh in events.SHAPES] + [("_burst", burst)]
    for sfx, what in cases:
        e = med("tp_extension" + sfx, "rate")
        bt = med("tp_batched" + sfx, "rate")
        cn = max([x for x in (med("tp_copy_staging" + sfx, "rate"), med("tp_copy_trigger" + sfx, "rate"))
                  if x is not None], default=None)
        r1, r2 = ratio(e, bt), ratio(e, cn)
        if r1 is not None:
            verdicts["batched" + sfx] = r1 >= 1.5
            targets.append("| %s: extension ≥ 1.5× batched Python | %.2f× (%s vs %s events/s) | %s |"
                           % (what, r1, fmt_rate(e), fmt_rate(bt), "**yes**" if r1 >= 1.5 else "**no**"))
        if r2 is not None:
            verdicts["copy" + sfx] = r2 >= 1.2
            targets.append("| %s: extension ≥ 1.2× COPY with two NOTIFYs per row (the faster of (a), (b)) | %.2f× (%s vs %s events/s) | %s |"
                           % (what, r2, fmt_rate(e), fmt_rate(cn), "**yes**" if r2 >= 1.2 else "**no**"))
    r3 = ratio(ext, med("tp_seed", "rate"))
    if r3 is not None:
        targets.append("| (for scale) extension vs seed-style Python | %.1f× | — |" % r3)
    for conns in (1, 8):
        rw = ratio(med("tp_webhook_%d" % conns, "rate"), ext)
        if rw is not None:
            targets.append("| (for scale) webhook receiver, %d keep-alive connection(s), vs the WebSocket path | %.2f× (%s vs %s events/s) | — |"
                           % (conns, rw, fmt_rate(med("tp_webhook_%d" % conns, "rate")), fmt_rate(ext)))
    if "lat_extension" in R and "lat_batched" in R:
        e50, e99 = med("lat_extension", "p50"), med("lat_extension", "p99")
        b50, b99 = med("lat_batched", "p50"), med("lat_batched", "p99")
        ok = e50 <= b50 and e99 <= b99
        verdicts["latency"] = ok
        targets.append("| latency p50 / p99 at %g events/s no worse than the batched client's | extension %.2f / %.2f ms, batched %.2f / %.2f ms (%.2f× / %.2f×) | %s |"
                       % (a.latency_rate, e50, e99, b50, b99, e50 / b50, e99 / b99, "**yes**" if ok else "**no**"))
        emax = med("lat_extension", "max")
        targets.append("| (docs/events.md) committed and notified within 10 ms of the frame | extension p99 %.2f ms, max %.2f ms | %s |"
                       % (e99, emax, "**yes**" if emax <= 10 else ("p99 yes, max **no**" if e99 <= 10 else "**no**")))
    if "tp_extension_baseline" in R:
        base = med("tp_extension_baseline", "rate")
        r4 = ratio(ext, base)
        verdicts["journal_cost"] = r4 >= 0.9
        targets.append("| (issue 9) the journal costs at most 10 %% of the extension's throughput | %.2f× the baseline (%s vs %s events/s, medians, runs alternated in one go) | %s |"
                       % (r4, fmt_rate(ext), fmt_rate(base), "**yes**" if r4 >= 0.9 else "**no**"))
    if "lat_extension" in R:
        e99 = med("lat_extension", "p99")
        verdicts["journal_latency"] = e99 < 2.0
        extra = ""
        if "lat_extension_baseline" in R:
            extra = " (baseline %.2f ms)" % med("lat_extension_baseline", "p99")
        targets.append("| (issue 9) send→NOTIFY p99 at %g events/s under 2 ms with the journal | %.2f ms%s | %s |"
                       % (a.latency_rate, e99, extra, "**yes**" if e99 < 2.0 else "**no**"))
    if "replay" in R and ext is not None:
        rr = med("replay", "rate")
        verdicts["replay"] = rr >= ext
        targets.append("| (issue 9) replaying a %d-frame journal after a crash at least the live ingest rate | %s vs %s events/s (%.2f×) | %s |"
                       % (b.replay_set.n, fmt_rate(rr), fmt_rate(ext), rr / ext, "**yes**" if rr >= ext else "**no**"))
    if "idle_cpu" in R:
        v = med("idle_cpu", "pct")
        verdicts["idle"] = v < 0.5
        targets.append("| idle worker CPU < 0.5 %% of a core | %.3f %% | %s |" % (v, "**yes**" if v < 0.5 else "**no**"))
    mem_keys = [k for k in ("mem_default", "mem_" + a.small_buffer) if k in R]
    if mem_keys:
        parts, over = [], []
        for k in mem_keys:
            setting = R[k][0]["setting"]
            limit_kb = parse_size_kb(setting)
            peak = max(runs_of(res, k, "peak_kb"))
            over.append(peak - limit_kb)
            d = peak - limit_kb
            parts.append("buffer_limit %s: peak %s = limit %s %s" % (setting, mb(peak), "+" if d >= 0 else "−",
                                                                     mb(abs(d))))
        burst_kb = b.burst.bytes / 1024
        # issue 14: the peak within the limit + 16 MB at each setting
        ok = len(over) == 2 and max(over) <= 16 * 1024
        verdicts["memory"] = ok
        targets.append("| peak RssAnon ≤ buffer_limit + 16 MB, at both settings | %s (burst: %s of frames) | %s |"
                       % ("; ".join(parts), mb(burst_kb), "**yes**" if ok else "**no**"))
    return table, targets, verdicts


def parse_size_kb(s):
    m = re.fullmatch(r"\s*(\d+)\s*(kB|MB|GB|TB)?\s*", s)
    if not m:
        return 0
    n = int(m.group(1))
    return n * {"kB": 1, "MB": 1024, "GB": 1024 ** 2, "TB": 1024 ** 3, None: 1}[m.group(2)]


def methods(b):
    a = b.a
    return f"""\
- **Event mix** (`bench/events.py`): overlapping calls ({events.CONCURRENT_CALLS} at a time), each
  {events.CALL_EVENTS} `call_*` events (the bare call object VoIPBIN sends today, 1.2–1.9 KB:
  created, ringing, progressing, terminating, hangup) around {events.TRANSCRIPTS_PER_CALL}
  `transcript_created` lines (280–400 B); compact JSON, raw resource shape, no envelope.
  Throughput: {b.main.describe()}; seed-style client: {b.seed_set.n} events (it is slow);
  latency: {b.lat_set.n}; burst: {b.burst.describe()}.
- **Emitter** (`bench/emitter.c`, C + OpenSSL, one thread): TLS WebSocket server on 127.0.0.1 with
  the test CA (`test/gen_certs.py`; the extension verifies it through `voipbin.ca_file`);
  accepts subscribe frames, answers pings and pings every {a.ping_interval:g} s like VoIPBIN,
  serves `GET /v1.0/customer` for `voipbin_subscribe`. All frames are pre-built in one buffer and
  written in 256 KB chunks as fast as the client reads (TCP back-pressure: unlike VoIPBIN, which
  drops past 2,000 unread messages, it never drops, so slow clients are measured, not broken).
  Its ceiling is measured by blasting into `emitter sink`, a C TLS client that only counts frames.
- **Throughput** (extension, seed-style, batched): one client connected and subscribed; a
  separate LISTEN client (`bench/listener.py`, psycopg2) listens on `call_hangup`; the emitter
  blasts the set; time = from the emitter's first byte to the arrival of the NOTIFY of the
  set's last event (a `call_hangup`; every client stores in arrival order, so all rows are
  committed by then); then `count(*)` must equal the number sent (and the extension must report no
  dead letters or duplicates). Table truncated and `CHECKPOINT` before each run. The worker's
  network thread reads the whole set at once (see the emitter row), so a set larger than
  `voipbin.buffer_limit` would partly go through the spool file; the throughput set is kept
  under the default 64MB, and the burst rows give the rate when it spools.
- **Same table**: the Python clients and COPY write `{PLAIN}`, created with
  `CREATE TABLE … (LIKE {b.res.get("like_partition", "<the current partition>")} INCLUDING ALL)`
  (the partition of `{EXT}` the extension writes into) and its own sequence: the same columns,
  defaults and indexes ({"; ".join(b.res.get("indexes", []))}), checked at start. The extension's
  table also has the row trigger {", ".join(b.res.get("ext_triggers", [])) or "(none)"} (handlers); the copy
  has no trigger. The worker is disabled (no credential) while the other clients run. The
  Python classifier is checked against `voipbin_classify()` on 400 frames: the rows are identical.
- **Worker CPU** (extension throughput rows): utime + stime of each of the worker's threads
  (`/proc/<pid>/task/*/stat`) just before and after each run, per 1,000 events: the main
  thread's (it parses, stores and notifies) and, in brackets, all threads' (the network
  thread reads TLS and writes the journal). Less bent than events/s by what else runs, since
  it counts the worker's own work, not the time it waited for a core.
- **Webhook** (`bench/webhook_client.py`): the first {a.webhook_events} events of the
  throughput set, each wrapped as VoIPBIN wraps a webhook body (`{{"type","data"}}`, compact) and
  signed (`X-VoIPBIN-Signature`, `voipbin.webhook_secret`), POSTed to the receiver on loopback over
  1 and over 8 keep-alive `http.client` connections, one request in flight per connection; a 200
  means the event is durable, so time = from the first request to the last answer, then
  `count(*)` must equal the number sent. The WebSocket stays connected but sends nothing.
- **Seed-style client** (`bench/seed_client.py`): the docs' `websocket.WebSocketApp` example with
  its defaults (so websocket-client checks UTF-8 in pure Python: Debian ships no `wsaccel`), plus
  per event: `json.loads`, classify, `INSERT … ON CONFLICT DO NOTHING RETURNING id`,
  `SELECT pg_notify(type, p), pg_notify('voipbin_events', p)`, `COMMIT`.
- **Batched client** (`bench/batched_client.py`): a reader thread only reads the socket into a
  queue (`skip_utf8_validation`, decode checks it); the main thread takes what has arrived (≤
  {a.copy_batch}, never waits to fill a batch), COPYs it into a temp staging table, and one
  statement does `INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING …` plus both `pg_notify`
  per stored row (payload = the frame's own text, `data` left out past 7,900 bytes); one
  commit per batch.
- **COPY ceilings**: the set's rows pre-built in memory (same classification, the frames' own
  JSON text), COPYed from psycopg2 in batches of {a.copy_batch} rows, one transaction each (the
  worker's own batch cap is 2,000 frames); time = first COPY to last commit. Plain:
  `COPY {PLAIN} FROM STDIN` (multi-insert, no dedupe check, no NOTIFY). With the two NOTIFYs,
  two ways, and the target compares with the faster: (a) `COPY pg_temp.stage FROM STDIN`, then
  the batched client's statement (ids drawn in arrival order, `INSERT … SELECT raw::jsonb …
  ON CONFLICT DO NOTHING RETURNING id`, payload = the frame's text, two `pg_notify` per inserted
  row), i.e. its database work without Python; (b) `COPY` straight into the table, with an
  `AFTER INSERT … REFERENCING NEW TABLE … FOR EACH STATEMENT` trigger doing the two `pg_notify`
  per new row (payload from the stored `data::text`; no dedupe: a duplicate would fail the batch).
  The same `call_hangup` listener is connected.
- **Latency**: the emitter sends the latency set at {a.latency_rate:g} frames/s (one frame per
  slot) and records each frame's send time (CLOCK_REALTIME, just before the TLS write); the LISTEN
  client on `voipbin_events` timestamps each notification as it reads it (same clock, same
  machine) and names its frame by (event_type, resource_id). Per run p50/p99/max of all
  events; the table gives the median over runs.
- **Journal replay** (issue 9): the worker connected, `voipbin_events` locked (`LOCK TABLE … IN
  ACCESS EXCLUSIVE MODE` in an open transaction), the replay set ({a.replay_events} events)
  blasted: the network thread journals all of it while the main thread waits on the lock;
  once `buffered_bytes` covers the set, `kill -9` of the worker (the postmaster restarts every
  process, the lock goes with it). Time = from the next worker's `backend_start` to the first
  `count(*)` (polled every 50 ms) equal to the set; it must report no duplicates and no dead
  letters. Compared with the extension's live throughput above.
- **Baseline library** (`--baseline-so`): the extension's throughput and latency runs are done
  with a `voipbin.so` built from another commit ({a.baseline_label}) and with this build's,
  alternating run by run (the cluster restarts to swap the file, then `CHECKPOINT` and a
  truncated table as for every run), so both see the same machine load; the ratio of the
  medians is the cost of what differs.
- **Idle CPU**: the worker connected, both topics `active`, nothing sent; utime+stime of the
  worker process (all threads) from `/proc/<pid>/stat` over {a.idle_seconds:g} s windows (resolution
  1/{CLK_TCK} s). The emitter's pings (every {a.ping_interval:g} s) are answered during the window; the
  once-a-minute retention pass may or may not fall inside it.
- **Memory**: the cluster restarted (a fresh worker) with `voipbin.buffer_limit` at its default,
  then at {a.small_buffer}; the burst blasted as fast as the worker reads; `RssAnon` of the worker
  from `/proc/<pid>/status` sampled every 10 ms until the last event's NOTIFY; “idle before”
  is RssAnon once connected, “after” once the last event is stored. Past the limit the worker
  spools to a file (on disk, not counted). The target counts as met when the peak's excess over
  the limit is about the same at both settings (within 16 MB: a fixed overhead) and, at the
  small setting, the peak stays under half the burst's size (memory did not follow the burst).
"""


def _rounded(x):
    if isinstance(x, float):
        return float("%.4g" % x)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def raw_runs(runs):
    return "\n".join("%s:\n%s" % (k, "\n".join("  " + json.dumps(_rounded(r)) for r in v))
                     for k, v in runs.items())


def write_results(b, table, targets, verdicts, path):
    res, a, m = b.res, b.a, b.res["machine"]
    old = open(path).read() if os.path.exists(path) else ""

    def section(head):
        """The old file's section that starts with head, up to the next one; "" if none."""
        i = old.find(head)
        if i < 0:
            return ""
        j = old.find("\n## ", i + len(head))
        return old[i:j if j >= 0 else len(old)].rstrip() + "\n"
    kept = section(WHAT_WAS_TRIED) or None
    kept_scale = section(SCALE_SECTION) and "\n" + section(SCALE_SECTION)
    journal_cost = section(JOURNAL_COST) and "\n" + section(JOURNAL_COST)
    journal_cost += section(REDESIGN_COST) and "\n" + section(REDESIGN_COST)
    journal_cost += section(REQUESTS_COST) and "\n" + section(REQUESTS_COST)
    if kept is None:
        kept = (WHAT_WAS_TRIED + "\n\n_For the engineer who optimises `src/`: what was changed, in which order, and what\n"
                "each step did to the numbers above (bench/run keeps this section when it rewrites this file)._\n\n"
                "- …\n")
    met = [k for k, v in verdicts.items() if v]
    unmet = [k for k, v in verdicts.items() if not v]
    names = {"batched": "≥ 1.5× batched Python", "copy": "≥ 1.2× COPY with two NOTIFYs",
             "latency": "latency no worse than batched Python", "idle": "idle CPU < 0.5 %",
             "memory": "peak memory ≤ buffer_limit + 16 MB", "journal_cost": "journal costs ≤ 10 % of throughput",
             "journal_latency": "p99 < 2 ms with the journal", "replay": "journal replay ≥ live ingest"}

    def name(k):
        # batched_wrapped → "≥ 1.5× batched Python (wrapped)"
        for base in ("batched", "copy"):
            if k.startswith(base + "_"):
                return "%s (%s)" % (names[base], k[len(base) + 1:].replace("_", "-"))
        return names.get(k, k)
    summary = ("Targets met: %s. Not met: %s." % (", ".join(name(k) for k in met) or "none",
                                                   ", ".join(name(k) for k in unmet) or "none"))
    s = m["settings"]
    text = f"""# voipbin benchmark results (issues 5, 9, 14)

Written by `bench/run{' ' + ' '.join(a.argv) if a.argv else ''}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}
({res['elapsed'] / 60:.1f} min). Numbers are what the current code achieves on this machine: medians of
{a.runs} run(s), every run shown. {summary}

## Results

{chr(10).join(table)}

## Targets

{chr(10).join(targets)}
{journal_cost}
## Machine

- CPU: {m['cpu']}, `nproc` = {m['nproc']}; memory {m['memory']}; Linux {m['kernel']}, Debian {m['debian']}
- Extension measured: {m['code']} (built and installed by `bench/run`)
- {m['pg']}
- Throwaway cluster from `test/pgcluster.py` (run as `postgres`, Unix socket, in /tmp): PostgreSQL's
  defaults except fsync = {s['fsync']}, synchronous_commit = {s['synchronous_commit']}, max_wal_size = {s['max_wal_size']}
  (a `CHECKPOINT` before every timed run), shared_buffers = {s['shared_buffers']}, wal_level = {s['wal_level']}.
- Everything on this machine over loopback: emitter, clients, listener and server share the
  {m['nproc']} cores. Load average at start {m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}: the
  machine is shared with other engineers' test suites, so expect some noise.
- Python {m['python']} (`/usr/bin/python3`, Debian's websocket-client and psycopg2).

## How each number is measured

{methods(b)}
{kept}{kept_scale}
## Raw runs

```
{raw_runs(res['runs'])}
```
"""
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------ main

def env(name, default, cast=str):
    v = os.environ.get(name)
    return cast(v) if v not in (None, "") else default


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="voipbin benchmark (issue 5): the extension vs Python clients vs COPY. "
                    "Every option also reads an environment variable (BENCH_<NAME>).")
    p.add_argument("--quick", action="store_true", default=env("BENCH_QUICK", False, lambda v: v.lower() not in ("0", "false", "no")),
                   help="small sizes and 1 run (about a minute), for smoke tests; writes no "
                        "results file unless --out is given")
    p.add_argument("--events", type=int, help="events per throughput run (default 50000; quick 5000)")
    p.add_argument("--seed-events", type=int, help="events for the slow seed-style client (default 6000; quick 600; 0: skip it)")
    p.add_argument("--burst-events", type=int, help="events in the memory burst (default 200000; quick 30000)")
    p.add_argument("--runs", type=int, help="runs of every measurement; medians reported (default 3; quick 1)")
    p.add_argument("--latency-rate", type=float, help="events/s of the latency runs (default 500)")
    p.add_argument("--latency-seconds", type=float, help="length of a latency run (default 20; quick 4)")
    p.add_argument("--idle-seconds", type=float, help="idle CPU window (default 20; quick 4)")
    p.add_argument("--small-buffer", help="the second voipbin.buffer_limit (default 8MB)")
    p.add_argument("--copy-batch", type=int, help="rows per COPY batch and batched-client batch cap (default 2000)")
    p.add_argument("--ping-interval", type=float, help="emitter's ping interval in s (default 10, as VoIPBIN)")
    p.add_argument("--fsync", choices=["on", "off"], help="the cluster's fsync (default on)")
    p.add_argument("--only", help="comma list of ceiling,throughput,throughput-extension,burst,requests,webhook,latency,replay,idle,memory (default all)")
    p.add_argument("--shapes", help="frame shapes of the throughput runs, comma list of raw,wrapped,quick-start (default all three)")
    p.add_argument("--drain-requests", type=int, help="queued requests of the drain run (default 1000; quick 100)")
    p.add_argument("--webhook-events", type=int, help="events POSTed per webhook run (default 10000; quick 2000)")
    p.add_argument("--replay-events", type=int, help="frames in the journal replay run (default 500000; quick 20000)")
    p.add_argument("--baseline-so", help="a voipbin.so built from another commit: its throughput and latency "
                                         "runs alternate with this build's (the cluster restarts to swap)")
    p.add_argument("--baseline-label", help="what the baseline is, for the report")
    p.add_argument("--out", help="results file (default bench/RESULTS.md; none with --quick or --only)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, frames)")
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--emitter", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    q = a.quick
    defaults = {
        "events": ("BENCH_EVENTS", 5000 if q else 50000, int),
        "seed_events": ("BENCH_SEED_EVENTS", 600 if q else 6000, int),
        "burst_events": ("BENCH_BURST_EVENTS", 30000 if q else 200000, int),
        "replay_events": ("BENCH_REPLAY_EVENTS", 20000 if q else 500000, int),
        "baseline_so": ("BENCH_BASELINE_SO", None, str),
        "baseline_label": ("BENCH_BASELINE_LABEL", "baseline", str),
        "runs": ("BENCH_RUNS", 1 if q else 3, int),
        "latency_rate": ("BENCH_LATENCY_RATE", 500.0, float),
        "latency_seconds": ("BENCH_LATENCY_SECONDS", 4.0 if q else 20.0, float),
        "idle_seconds": ("BENCH_IDLE_SECONDS", 4.0 if q else 20.0, float),
        "small_buffer": ("BENCH_SMALL_BUFFER", "8MB", str),
        "copy_batch": ("BENCH_COPY_BATCH", 2000, int),
        "webhook_events": ("BENCH_WEBHOOK_EVENTS", 2000 if q else 10000, int),
        "drain_requests": ("BENCH_DRAIN_REQUESTS", 100 if q else 1000, int),
        "ping_interval": ("BENCH_PING_INTERVAL", 10.0, float),
        "fsync": ("BENCH_FSYNC", "on", str),
        "only": ("BENCH_ONLY", None, str),
        "shapes": ("BENCH_SHAPES", ",".join(events.SHAPES), str),
        "out": ("BENCH_OUT", None, str),
    }
    for k, (var, dflt, cast) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, env(var, dflt, cast))
    a.shapes = [x.strip() for x in a.shapes.split(",") if x.strip()]
    for x in a.shapes:
        if x not in events.SHAPES:
            p.error("--shapes: %r is none of %s" % (x, ", ".join(events.SHAPES)))
    if a.out is None and not q and not a.only:
        a.out = os.path.join(HERE, "RESULTS.md")
    a.argv = [x for x in argv if not x.startswith("--workdir") and not x.startswith("--emitter")
              and x not in (a.workdir, a.emitter)]
    if not a.workdir or not a.emitter:
        p.error("run me through bench/run")
    return a


def main(argv):
    a = parse_args(argv)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    b = Bench(a)
    try:
        b.run()
        table, targets, verdicts = report(b)
        print()
        print("\n".join(table))
        print()
        print("\n".join(targets))
        print()
        if a.out:
            write_results(b, table, targets, verdicts, a.out)
            print("written: %s" % a.out)
    except BenchError as e:
        log("FAILED: %s" % e)
        if b.cluster:
            lines = b.cluster.read_log().splitlines()
            errors = [i for i, l in enumerate(lines) if " ERROR: " in l]
            shown = lines[max(0, errors[-1] - 2):errors[-1] + 4] if errors else lines[-15:]
            log("server log (%s):\n  " % ("last error" if errors else "last lines")
                + "\n  ".join(l[:400] for l in shown))
        return 1
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
