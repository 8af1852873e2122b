"""examples/live_transcripts.py never misses a line: its backend terminated
mid-stream, events stored while it cannot connect, others racing its
reconnection, a line that commits late below an id it has printed — each
line is printed exactly once (docs/events.md#listen-clients-that-never-miss-an-event)."""
import json
import os
import signal
import subprocess
import threading
import uuid

import pytest

from helpers import subscribe, transcript
from pgcluster import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "live_transcripts.py")
EXAMPLE_JS = os.path.join(ROOT, "examples", "live_transcripts.js")
EXAMPLE_SH = os.path.join(ROOT, "examples", "live_transcripts.sh")
NODE = "/usr/bin/node"
# the npm `pg` package, when installed: examples/node_modules (cd examples &&
# npm install), or a directory of NODE_PATH; the suite does not install it
NODE_PATH = os.pathsep.join(filter(None, [os.path.join(ROOT, "examples", "node_modules"),
                                          os.environ.get("NODE_PATH")]))
ROLE = "vb_feed"
APP = "feed-catchup"


class Feed:
    """The example as a user runs it, as ROLE; stdout and stderr read line by line."""

    def __init__(self, cluster, lang="python"):
        env = dict(os.environ, PGHOST=cluster.sock, PGPORT=str(cluster.port), PGUSER=ROLE,
                   PGDATABASE=cluster.dbname, PGAPPNAME=APP)
        argv = ["/usr/bin/python3", EXAMPLE, "--seconds", "120"]
        if lang == "node":
            argv = [NODE, EXAMPLE_JS]
            env["NODE_PATH"] = NODE_PATH
        elif lang == "psql":
            argv = ["sh", EXAMPLE_SH]
        self.lang = lang
        self.proc = subprocess.Popen(argv, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(s, l), daemon=True)
                        for s, l in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def messages(self):
        if self.lang == "psql":     # the events' JSON
            return [json.loads(line)["data"]["message"] for line in list(self.out)]
        return [line.split("  ")[-1].strip() for line in list(self.out)]

    def wait_printed(self, messages, timeout=20):
        try:
            wait_until(lambda: set(messages) <= set(self.messages()), timeout,
                       what="%r printed" % (messages,))
        except AssertionError as e:
            raise AssertionError("%s; stdout %r; stderr %r" % (e, self.out, self.err))

    def wait_stderr(self, text, timeout=20):
        try:
            wait_until(lambda: any(text in line for line in list(self.err)), timeout,
                       what="a stderr line with %r" % text)
        except AssertionError as e:
            raise AssertionError("%s; stderr %r" % (e, self.err))

    def stop(self):
        """Ends its process group (the shell's psql and loops too)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for t in self.readers:
            t.join(5)


def backend(cluster):
    """The feed's backend once it has run its LISTEN (then its catch-up)."""
    row = cluster.query_one("SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                            " AND state = 'idle' AND (query ILIKE 'LISTEN%%' OR query ILIKE '%%voipbin_events%%')",
                            (APP,))
    return row[0] if row else None


@pytest.fixture
def feed_role(vb):
    vb.execute("DROP ROLE IF EXISTS %s" % ROLE)
    vb.execute("CREATE ROLE %s LOGIN" % ROLE)
    # what the example's docstring says it needs
    vb.execute("GRANT SELECT ON voipbin_events, voipbin_transcripts TO %s;"
               " GRANT EXECUTE ON FUNCTION voipbin_timestamp(text), voipbin_offset(text) TO %s" % (ROLE, ROLE))
    yield ROLE
    vb.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,))
    vb.execute("DROP OWNED BY %s; DROP ROLE %s" % (ROLE, ROLE))


def publish(fake, messages):
    for m in messages:
        fake.publish("transcript_created", transcript(fake, m))


def stored(cluster, messages):
    return cluster.query_one("SELECT count(*) FROM voipbin_events WHERE event_type = 'transcript_created'"
                             " AND data->>'message' = ANY(%s)", (list(messages),))[0] == len(messages)


def cut_off(cluster, feed):
    """Its role may no longer log in, and its backend is terminated: the feed
    is disconnected until LOGIN comes back (its attempts meanwhile fail)."""
    cluster.execute("ALTER ROLE %s NOLOGIN" % ROLE)
    pid = cluster.query_one("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP,))[0]
    assert cluster.query_one("SELECT pg_terminate_backend(%s)", (pid,))[0]


def node_has_pg():
    if not os.access(NODE, os.X_OK):
        return False
    r = subprocess.run([NODE, "-e", "require.resolve('pg')"], env=dict(os.environ, NODE_PATH=NODE_PATH),
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return r.returncode == 0


@pytest.mark.parametrize("lang", ["python", "node", "psql"])
def test_every_line_once_across_a_terminated_backend(vb, fake, topic, feed_role, lang):
    if lang == "node" and not node_has_pg():
        pytest.skip("the pg module is not installed (cd examples && npm install, or NODE_PATH)")
    subscribe(vb, fake, topic + "transcript:")
    tag = uuid.uuid4().hex[:8]
    lines = ["line %02d %s" % (i, tag) for i in range(1, 16)]
    feed = Feed(vb, lang)
    try:
        wait_until(lambda: backend(vb), timeout=15, what="the feed listening")
        publish(fake, lines[:5])
        feed.wait_printed(lines[:5])

        # killed mid-stream: lines 6-10 are stored while it cannot connect
        cut_off(vb, feed)
        publish(fake, lines[5:10])
        wait_until(lambda: stored(vb, lines[5:10]), what="lines 6-10 stored")
        feed.wait_stderr("not permitted to log in")
        assert set(feed.messages()).isdisjoint(lines[5:10])

        # back, while lines 11-15 keep arriving: they race its LISTEN and catch-up
        vb.execute("ALTER ROLE %s LOGIN" % ROLE)
        publish(fake, lines[10:])
        feed.wait_printed(lines)
        # a last line, after everything: a line printed twice would show before it
        last = "last line %s" % tag
        publish(fake, [last])
        feed.wait_printed([last])
    finally:
        feed.stop()
    assert feed.messages() == lines + [last], (feed.out, feed.err)
    assert any(e.startswith("connection lost") for e in feed.err), feed.err
    if lang == "python":
        assert feed.proc.returncode == 0 and feed.err[0].startswith("connection lost: "), feed.err


@pytest.mark.parametrize("lang", ["python", "node", "psql"])
def test_a_line_that_commits_late_is_caught_up(vb, fake, topic, feed_role, lang):
    """An id drawn in a transaction still open while the worker stores larger
    ones (voipbin_retry_dead_letters() in a user's transaction does this; here
    an INSERT of the user's), committed while the feed is disconnected: the
    catch-up's window reads it."""
    if lang == "node" and not node_has_pg():
        pytest.skip("the pg module is not installed (cd examples && npm install, or NODE_PATH)")
    subscribe(vb, fake, topic + "transcript:")
    tag = uuid.uuid4().hex[:8]
    feed = Feed(vb, lang)
    late_conn = vb.connect(autocommit=False)
    try:
        wait_until(lambda: backend(vb), timeout=15, what="the feed listening")
        publish(fake, ["before %s" % tag])
        feed.wait_printed(["before %s" % tag])

        late = transcript(fake, "late %s" % tag)
        with late_conn.cursor() as cur:
            cur.execute("INSERT INTO voipbin_events (received_at, source, event_type, resource,"
                        " resource_id, customer_id, data) VALUES (now(), 'websocket', 'transcript_created',"
                        " 'transcript', %s, %s, %s) RETURNING id",
                        (late["id"], late["customer_id"], json.dumps(late)))
            late_id = cur.fetchone()[0]
        publish(fake, ["after %s" % tag])
        feed.wait_printed(["after %s" % tag])
        assert vb.query_one("SELECT id FROM voipbin_events WHERE data->>'message' = %s",
                            ("after %s" % tag,))[0] > late_id

        cut_off(vb, feed)
        feed.wait_stderr("not permitted to log in")
        late_conn.commit()      # visible now, below an id the feed printed
        vb.execute("ALTER ROLE %s LOGIN" % ROLE)
        feed.wait_printed(["late %s" % tag])
        publish(fake, ["last %s" % tag])
        feed.wait_printed(["last %s" % tag])
    finally:
        late_conn.close()
        feed.stop()
    assert feed.messages() == ["before %s" % tag, "after %s" % tag, "late %s" % tag, "last %s" % tag], \
        (feed.out, feed.err)
