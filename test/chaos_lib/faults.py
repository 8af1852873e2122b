"""How each fault is injected and cleared.  A lane runs its faults one after
the other on a thread of its own; every SQL step is retried while the server
is down (another lane may have stopped it), and clearing a fault is retried
until it holds, so that no fault outlives its time."""
import os
import signal
import threading
import time

import psycopg2

from helpers import try_query
from pgcluster import free_port, wait_until

INJECTED_DATA_ERROR = "chaos: injected data error"


class Context:
    """What the faults leave for the account."""

    def __init__(self):
        self.lock = threading.Lock()
        self.killed_pids = set()        # processes the run killed with SIGKILL
        self.injected = {}              # kind -> count
        self.dead_letters = []          # (id, error) of every dead letter seen before its retry
        self.retried = 0                # events voipbin_retry_dead_letters() stored
        self.notes = []                 # faults that could not be injected as drawn
        self.errors = []                # a harness step that failed: the run is void

    def count(self, kind):
        with self.lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1


def retry_sql(cluster, fn, timeout=120, what="an SQL step"):
    """fn(conn) on a fresh connection, again while the server cannot answer."""
    holder = {}

    def attempt():
        try:
            conn = cluster.connect()
            try:
                holder["r"] = fn(conn)
            finally:
                conn.close()
            return True
        except psycopg2.Error:
            return None
    wait_until(attempt, timeout=timeout, interval=0.2, what=what)
    return holder.get("r")


def sql(cluster, statement, params=None, fetch=False, timeout=120):
    def fn(conn):
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if fetch else None
    return retry_sql(cluster, fn, timeout, what=statement.split()[0] + " ...")


def wait_worker(rig, old_pid=None, timeout=90):
    """A worker running again (another than old_pid, when given)."""
    return wait_until(lambda: (lambda p: p if p and p != old_pid else None)(rig.worker_pid()),
                      timeout=timeout, interval=0.1, what="the worker back")


# ---- the server lane: one act, then the wait for the worker to be back ----

def kill_worker(rig, f, ctx):
    pid = rig.worker_pid()
    if pid is None:
        f.note = "no worker to kill"
        return
    with ctx.lock:
        ctx.killed_pids.add(pid)
    os.kill(pid, signal.SIGKILL)
    wait_worker(rig, pid)


def kill_backend(rig, f, ctx):
    """An ordinary backend dies: the postmaster resets every process (a crash restart)."""
    old = rig.worker_pid()
    conn = rig.cluster.connect()
    pid = conn.get_backend_pid()
    with ctx.lock:
        ctx.killed_pids.add(pid)
    os.kill(pid, signal.SIGKILL)
    try:
        conn.close()
    except psycopg2.Error:
        pass
    wait_worker(rig, old)


def stop_immediate(rig, f, ctx):
    rig.restart_server("immediate")
    wait_worker(rig)


def restart_fast(rig, f, ctx):
    rig.restart_server("fast")
    wait_worker(rig)


# ---- the WebSocket lane ---------------------------------------------------

def ws_drop(rig, f, ctx):
    rig.fake.drop()


def ws_close(rig, f, ctx):
    rig.fake.send(close_code=1001, close_reason="going away", graceful=True)


def ws_freeze(rig, f, ctx):
    """Half-open: the fake neither reads nor writes; only the idle timeout tells."""
    rig.fake.freeze(True)


def ws_freeze_clear(rig, f, ctx):
    rig.fake.freeze(False)


def ws_outage(rig, f, ctx):
    rig.fake.config(ws_reject_status=503)
    rig.fake.drop()


def ws_outage_clear(rig, f, ctx):
    rig.fake.config(ws_reject_status=None)


# ---- the REST lane --------------------------------------------------------

def rest_5xx(rig, f, ctx):
    rig.fake.config(rest_status=f.params["status"])


def rest_429(rig, f, ctx):
    rig.fake.config(rest_status=429, rest_retry_after=f.params["retry_after"])


def rest_hang(rig, f, ctx):
    # the worker's voipbin.http_timeout ends each hung request
    rig.fake.config(rest_hang=True)


def rest_clear(rig, f, ctx):
    rig.fake.config(rest_status=None, rest_retry_after=None, rest_hang=False)


# ---- the database lane ----------------------------------------------------

class Lock:
    """voipbin_events locked for the fault's length on a session of its own."""

    def __init__(self):
        self.conn = None

    def inject(self, rig, f, ctx):
        try:
            self.conn = rig.cluster.connect(autocommit=False)
            with self.conn.cursor() as cur:
                cur.execute("SET lock_timeout = '30s'")
                cur.execute("LOCK TABLE voipbin_events IN ACCESS EXCLUSIVE MODE")
        except psycopg2.Error as e:
            f.note = "not locked: %s" % str(e).strip().splitlines()[0]

    def clear(self, rig, f, ctx):
        if self.conn is not None:
            try:
                self.conn.rollback()
                self.conn.close()
            except psycopg2.Error:
                pass        # the server went down meanwhile: the lock went with it
            self.conn = None


def transient(rig, f, ctx):
    sql(rig.cluster, "INSERT INTO chaos_ctl VALUES ('transient', %s)"
        " ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", (f.params["code"],))


def transient_clear(rig, f, ctx):
    sql(rig.cluster, "DELETE FROM chaos_ctl WHERE k = 'transient'")


def data_error(rig, f, ctx):
    sql(rig.cluster, "INSERT INTO chaos_ctl VALUES ('data_error', 'on') ON CONFLICT DO NOTHING")


def data_error_clear(rig, f, ctx):
    sql(rig.cluster, "DELETE FROM chaos_ctl WHERE k = 'data_error'")
    retry_dead_letters(rig, ctx)


def retry_dead_letters(rig, ctx):
    """Notes every dead letter there is, then stores them again (the fault is
    cleared: they are stored now).  Returns how many there were."""
    def fn(conn):
        with conn.cursor() as cur:
            cur.execute("SELECT id, error FROM voipbin_dead_letters ORDER BY id")
            rows = cur.fetchall()
            cur.execute("SELECT voipbin_retry_dead_letters()")
            return rows, cur.fetchone()[0]
    rows, stored = retry_sql(rig.cluster, fn, what="voipbin_retry_dead_letters()")
    with ctx.lock:
        seen = {i for i, _ in ctx.dead_letters}
        ctx.dead_letters.extend(r for r in rows if r[0] not in seen)
        ctx.retried += stored or 0
    return len(rows)


# ---- reloads --------------------------------------------------------------

def reload(rig, f, ctx):
    def fn(conn):
        with conn.cursor() as cur:
            for name, value in f.params.items():
                cur.execute("ALTER SYSTEM SET %s = %%s" % name, (value,))
            cur.execute("SELECT pg_reload_conf()")
    retry_sql(rig.cluster, fn, what="a reload")


# ---- the journal's disk ---------------------------------------------------

def filler_path(rig):
    return os.path.join(rig.spool_dir, "chaos-filler")


def journal_full(rig, f, ctx):
    """Every free byte of the journal's filesystem taken: the journal's
    writes fail (ENOSPC) while WebSocket frames and webhooks keep coming."""
    if not rig.spool_dir:
        f.note = rig.spool_note
        return
    st = os.statvfs(rig.spool_dir)
    fd = os.open(filler_path(rig), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize)
        except OSError:
            pass        # what fitted is taken; the rest was taken by the journal meanwhile
    finally:
        os.close(fd)


def journal_full_clear(rig, f, ctx):
    try:
        os.unlink(filler_path(rig))
    except FileNotFoundError:
        pass


# ---- the webhook receiver's port ------------------------------------------

def port_change(rig, f, ctx):
    """voipbin.webhook_port changed by a reload, as an operator moves the
    receiver; VoIPBIN's deliveries follow once it listens there (the load's
    senders read rig.webhook_port at each attempt)."""
    new = free_port()

    def fn(conn):
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET voipbin.webhook_port = %s", (str(new),))
            cur.execute("SELECT pg_reload_conf()")
    retry_sql(rig.cluster, fn, what="the receiver's port changed")
    wait_until(lambda: try_query(lambda: (":%d" % new) in (rig.cluster.status()["webhook_state"] or "")),
               timeout=60, interval=0.05, what="the receiver listening on its new port")
    f.params = {"port": new}
    rig.webhook_port = new


# kind -> (inject, clear or None)
def actions():
    lock = Lock()
    return {
        "kill_worker": (kill_worker, None), "kill_backend": (kill_backend, None),
        "stop_immediate": (stop_immediate, None), "restart_fast": (restart_fast, None),
        "ws_drop": (ws_drop, None), "ws_close": (ws_close, None),
        "ws_freeze": (ws_freeze, ws_freeze_clear), "ws_outage": (ws_outage, ws_outage_clear),
        "rest_5xx": (rest_5xx, rest_clear), "rest_429": (rest_429, rest_clear),
        "rest_hang": (rest_hang, rest_clear),
        "lock": (lock.inject, lock.clear), "transient": (transient, transient_clear),
        "data_error": (data_error, data_error_clear),
        "reload": (reload, None),
        "journal_full": (journal_full, journal_full_clear), "port_change": (port_change, None),
    }


def run_lane(rig, faults, ctx, t_start, stop, log):
    """Runs one lane's faults at their times (t_start: the run's monotonic start)."""
    acts = actions()
    for f in faults:
        # the schedule's clock: a fault starts at its time, not on any condition
        if stop.wait(max(0.0, t_start + f.start - time.monotonic())):
            return
        inject, clear = acts[f.kind]
        log("%6.1f s  %s" % (time.monotonic() - t_start, f))
        try:
            inject(rig, f, ctx)
            ctx.count(f.kind)
            if clear is not None:
                stop.wait(max(0.0, t_start + f.start + f.length - time.monotonic()))
                clear(rig, f, ctx)
        except Exception as e:      # noqa: BLE001  the run is void; said with the seed
            ctx.errors.append("%r: %s: %s" % (f, type(e).__name__, e))
            if clear is not None:
                try:
                    clear(rig, f, ctx)
                except Exception as e2:     # noqa: BLE001
                    ctx.errors.append("%r, clearing: %s" % (f, e2))
        f.done = True
        if f.note:
            ctx.notes.append("%r: %s" % (f, f.note))
