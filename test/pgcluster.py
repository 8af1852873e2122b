"""A throwaway PostgreSQL cluster for the integration tests.

Postgres refuses to run as root, so the cluster lives in a directory owned by
the `postgres` OS user and every server-side command runs through `runuser`.
Clients connect over the cluster's own Unix socket directory.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2
import psycopg2.extensions

PG_BIN = subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
RUN_AS = "postgres"


def free_port():
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a truthy value, or fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(interval)


class Cluster:
    # The server programs run_as_postgres() runs (a subclass or an instance may
    # point it elsewhere, e.g. at another release's binaries).
    bindir = PG_BIN
    # Every cluster made in this process, destroyed or not; and what to call
    # with a cluster just before destroy() removes its files (the session's
    # check of every server log in conftest.py reads them there).
    every = []
    before_destroy = []

    def __init__(self, conf, dbname="voipbin_test", initdb_args=()):
        empty = Cluster._empty()
        self.__dict__.update(empty.__dict__)
        self.dbname = dbname
        self.run_as_postgres("initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                             "--no-sync", "-E", "UTF8", "--locale=C.UTF-8", *initdb_args)
        base = {
            "listen_addresses": "''",
            "unix_socket_directories": "'%s'" % self.sock,
            "port": str(self.port),
            "shared_preload_libraries": "'voipbin'",
            "voipbin.database": "'%s'" % dbname,
            "fsync": "off",
            "log_min_messages": "info",
            "log_line_prefix": "'%m [%p] %b '",
        }
        base.update(conf)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            for k, v in base.items():
                f.write("%s = %s\n" % (k, v))

    @classmethod
    def _empty(cls):
        c = cls.__new__(cls)
        c.dir = tempfile.mkdtemp(prefix="voipbin-pg-")
        os.chmod(c.dir, 0o755)
        c.data = os.path.join(c.dir, "data")
        c.sock = os.path.join(c.dir, "sock")
        c.log = os.path.join(c.dir, "postgres.log")
        os.mkdir(c.sock)
        shutil.chown(c.dir, RUN_AS, RUN_AS)
        shutil.chown(c.sock, RUN_AS, RUN_AS)
        c.port = free_port()
        Cluster.every.append(c)
        return c

    def make_replica(self):
        """A streaming replica of this (running) cluster, not started yet."""
        r = Cluster._empty()
        r.dbname = self.dbname
        self.run_as_postgres("pg_basebackup", "-h", self.sock, "-p", str(self.port),
                             "-U", "postgres", "-D", r.data, "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(os.path.join(r.data, "postgresql.conf"), "a") as f:
            f.write("port = %d\nunix_socket_directories = '%s'\nhot_standby = on\n" % (r.port, r.sock))
        # the copied auto.conf still points the worker at the same fake server
        return r

    def run_as_postgres(self, prog, *args, check=True, timeout=60):
        """Runs the PostgreSQL program prog (pg_ctl, pg_dump, psql, ...) as the
        postgres OS user; returns the CompletedProcess, output in .stdout."""
        cmd = ["runuser", "-u", RUN_AS, "--", os.path.join(self.bindir, prog)] + list(args)
        return subprocess.run(cmd, check=check, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        self.run_as_postgres("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")
        if self.query_one("SELECT pg_is_in_recovery()", dbname="postgres")[0]:
            return
        if not self.query_one("SELECT 1 FROM pg_database WHERE datname = %s",
                              (self.dbname,), dbname="postgres"):
            self.execute("CREATE DATABASE %s" % self.dbname, dbname="postgres")

    def start_with_resolv_conf(self, resolv_conf):
        """Starts the server seeing resolv_conf as /etc/resolv.conf (a mount
        namespace of its own: nothing else on the machine sees it)."""
        subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount --bind "$1" /etc/resolv.conf && exec runuser -u postgres -- '
                        '"$2/pg_ctl" -D "$3" -l "$4" -w -t 60 start', "sh", resolv_conf, self.bindir,
                        self.data, self.log],
                       check=True, timeout=90, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.execute("CREATE DATABASE %s" % self.dbname, dbname="postgres")

    def stop(self, mode="fast"):
        return self.run_as_postgres("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60",
                                    "stop", check=False)

    def restart(self):
        self.run_as_postgres("pg_ctl", "-D", self.data, "-l", self.log, "-m", "fast", "-w",
                             "-t", "60", "restart")

    def destroy(self):
        self.stop("immediate")
        for hook in Cluster.before_destroy:
            hook(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, dbname=None, autocommit=True, user="postgres"):
        conn = psycopg2.connect(host=self.sock, port=self.port, user=user,
                                dbname=dbname or self.dbname)
        conn.autocommit = autocommit
        return conn

    def execute(self, sql, params=None, dbname=None, user="postgres"):
        conn = self.connect(dbname, user=user)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
        finally:
            conn.close()

    def query(self, sql, params=None, dbname=None, user="postgres"):
        conn = self.connect(dbname, user=user)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def query_one(self, sql, params=None, dbname=None):
        rows = self.query(sql, params, dbname)
        return rows[0] if rows else None

    def set_conf(self, **settings):
        """ALTER SYSTEM each setting (name with '__' for '.') and reload."""
        conn = self.connect()
        with conn.cursor() as cur:
            for k, v in settings.items():
                name = k.replace("__", ".")
                if v is None:
                    cur.execute("ALTER SYSTEM RESET %s" % name)
                else:
                    cur.execute("ALTER SYSTEM SET %s = %%s" % name, (str(v),))
            cur.execute("SELECT pg_reload_conf()")
        conn.close()

    def status(self):
        conn = self.connect()
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT * FROM voipbin_status()")
            row = cur.fetchone()
        conn.close()
        return row

    def wait_status(self, predicate, timeout=15.0, what="worker status"):
        holder = {}

        def check():
            holder["s"] = self.status()
            return predicate(holder["s"])
        try:
            wait_until(check, timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s; status: %r" % (e, holder.get("s")))
        return holder["s"]

    def worker_pid(self):
        row = self.query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'voipbin'")
        return row[0] if row else None

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class SwitchableCluster(Cluster):
    """A Cluster whose server binaries (and so library) can be swapped
    between restarts, as a package upgrade does; or that runs another
    major's (bindir: that installation's bin directory)."""

    def __init__(self, conf, bindir, dbname, initdb_args=()):
        self.bindir = bindir
        super().__init__(conf, dbname=dbname, initdb_args=initdb_args)

    def switch_to(self, bindir):
        self.stop()
        self.bindir = bindir
        self.start()


class Listener:
    """A LISTEN client on its own connection, like any user's (user: the role
    it connects as).  poll() returns (channel, payload, monotonic time)s."""

    def __init__(self, cluster, *channels, user="postgres"):
        self.conn = cluster.connect(user=user)
        with self.conn.cursor() as cur:
            for ch in channels:
                cur.execute("LISTEN %s" % ch)
        self.received = []

    def poll(self):
        import select
        if select.select([self.conn], [], [], 0.05)[0]:
            self.conn.poll()
            while self.conn.notifies:
                n = self.conn.notifies.pop(0)
                self.received.append((n.channel, n.payload, time.monotonic()))
        return self.received

    def wait_for(self, count, timeout=10.0, channel=None):
        def enough():
            got = [r for r in self.poll() if channel is None or r[0] == channel]
            return got if len(got) >= count else None
        return wait_until(enough, timeout, interval=0, what="%d notification(s)" % count)

    def close(self):
        self.conn.close()


import psycopg2.extras  # noqa: E402  (RealDictCursor)
