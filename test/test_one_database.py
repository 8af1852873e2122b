"""One database, said clearly (issue 22): the worker serves voipbin.database
only.  The extension created elsewhere warns, and there voipbin_status()
says other_database (none of the worker's pid, counters or errors) and
voipbin_subscribe() warns; a voipbin.database that does not exist is waited
for without a crash loop of FATALs; and the partitions for now exist as soon
as CREATE EXTENSION (or the update to 1.2) returns.

A cluster of its own: these tests drop and create the extension, and make
databases the other test files need not see."""
import re
import time

import pytest

from helpers import FAST, call, count, point_at, reset_cluster, subscribe
from pgcluster import Cluster, wait_until

SERVED = "onedb_served"
OTHER = "onedb_other"


@pytest.fixture(scope="module")
def cluster():
    """This module's own cluster, in place of the session's (conftest's vb uses it)."""
    c = Cluster(FAST, dbname=SERVED)
    c.start()
    c.execute("CREATE EXTENSION voipbin")
    c.execute("CREATE DATABASE %s" % OTHER, dbname="postgres")
    yield c
    c.destroy()


def run_with_notices(c, sql, params=None, dbname=None):
    """Runs sql; returns the WARNINGs it raised, each with its DETAIL and HINT."""
    conn = c.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
        return [n for n in conn.notices if n.startswith("WARNING")]
    finally:
        conn.close()


def status_in(c, dbname):
    conn = c.connect(dbname)
    try:
        import psycopg2.extras
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT * FROM voipbin_status()")
            return cur.fetchone()
    finally:
        conn.close()


def create_elsewhere(c, dbname=OTHER):
    """CREATE EXTENSION in a database the worker does not serve; its WARNINGs."""
    c.execute("DROP EXTENSION IF EXISTS voipbin CASCADE", dbname=dbname)
    return run_with_notices(c, "CREATE EXTENSION voipbin", dbname=dbname)


def assert_other_database(s, served=SERVED):
    assert s["state"] == "other_database", s
    assert 'serves database "%s" (voipbin.database)' % served in s["last_error"], s
    assert s["worker_pid"] is None and s["connected_since"] is None and s["last_frame_at"] is None, s
    assert (s["frames_received"], s["events_stored"], s["duplicates"], s["dead_letters"],
            s["reconnects"], s["buffered_bytes"], s["failures"]) == (0, 0, 0, 0, 0, 0, 0), s


def test_create_extension_elsewhere_warns_and_status_is_its_own(cluster, fake, secret_dir):
    point_at(cluster, fake, secret_dir)
    cluster.wait_status(lambda s: s["state"] == "connected", what="served database connected")
    topic = subscribe(cluster, fake, "customer_id:%s:call:call_" % fake.customer_id)
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(cluster) == 1, what="an event stored in the served database")

    warnings = create_elsewhere(cluster)
    assert len(warnings) == 1, warnings
    assert 'the worker serves database "%s", not this one ("%s")' % (SERVED, OTHER) in warnings[0]
    assert "voipbin.database = '%s'" % OTHER in warnings[0] and "restart the server" in warnings[0]

    served = cluster.status()
    assert served["state"] == "connected" and served["frames_received"] >= 1 and served["worker_pid"]
    assert_other_database(status_in(cluster, OTHER))
    # open to everyone there: it quotes no event
    cluster.execute("DROP ROLE IF EXISTS onedb_nobody; CREATE ROLE onedb_nobody LOGIN", dbname="postgres")
    try:
        conn = cluster.connect(OTHER, user="onedb_nobody")
        with conn.cursor() as cur:
            cur.execute("SELECT state, last_error FROM voipbin_status()")
            state, last_error = cur.fetchone()
        conn.close()
        assert state == "other_database" and SERVED in last_error
    finally:
        cluster.execute("DROP ROLE onedb_nobody", dbname="postgres")

    # subscribing there stores the topic, and warns that nobody reads it
    warnings = run_with_notices(cluster, "SELECT voipbin_subscribe(%s)", (topic,), dbname=OTHER)
    assert len(warnings) == 1, warnings
    assert 'no worker reads the topics of database "%s"' % OTHER in warnings[0]
    assert "voipbin.database = '%s'" % OTHER in warnings[0]
    assert cluster.query("SELECT topic, status FROM voipbin_subscriptions", dbname=OTHER) == [(topic, "pending")]
    # a rejected topic is still given one more try there
    cluster.execute("UPDATE voipbin_subscriptions SET status = 'rejected', last_error = 'x'", dbname=OTHER)
    run_with_notices(cluster, "SELECT voipbin_subscribe(%s)", (topic,), dbname=OTHER)
    assert cluster.query("SELECT status, last_error FROM voipbin_subscriptions", dbname=OTHER) == [("pending", None)]

    # in the served database: nothing changes, no warning
    assert run_with_notices(cluster, "SELECT voipbin_subscribe(%s)", (topic,)) == []
    assert fake.state()["connections"][-1]["topics"] == [topic]
    reset_cluster(cluster)


def test_drop_extension_in_the_served_database(cluster, fake, secret_dir):
    create_elsewhere(cluster)
    point_at(cluster, fake, secret_dir)
    cluster.wait_status(lambda s: s["state"] == "connected", what="served database connected")
    cluster.execute("DROP EXTENSION voipbin")
    try:
        assert_other_database(status_in(cluster, OTHER))
    finally:
        cluster.execute("CREATE EXTENSION voipbin")
    assert run_with_notices(cluster, "DROP EXTENSION voipbin; CREATE EXTENSION voipbin") == [], \
        "no warning in the served database"
    cluster.wait_status(lambda s: s["state"] == "connected", what="connected again")
    assert_other_database(status_in(cluster, OTHER))
    reset_cluster(cluster)


def now_covered(c, dbname, ahead="0"):
    """Whether a range partition covers now() + ahead."""
    return c.query_one("SELECT count(*) FROM voipbin_partitions()"
                       " WHERE now() + %s::interval >= lower AND now() + %s::interval < upper",
                       (ahead, ahead), dbname=dbname)[0] == 1


def test_partitions_exist_when_create_extension_returns(cluster):
    # in a database no worker serves, nobody else could have made them
    create_elsewhere(cluster)
    assert now_covered(cluster, OTHER) and now_covered(cluster, OTHER, "1 day")
    assert count(cluster, "voipbin_events_default", db=OTHER) == 0
    names = [r[0] for r in cluster.query("SELECT partition::text FROM voipbin_partitions()", dbname=OTHER)]
    assert all(re.fullmatch(r"voipbin_events_\d{8}", n) for n in names), names
    # the worker's interval rule: a quarter of a short retention
    cluster.set_conf(voipbin__event_retention="1h")
    try:
        wait_until(lambda: cluster.query_one("SHOW voipbin.event_retention", dbname=OTHER)[0] == "1h",
                   what="the retention reloaded")
        create_elsewhere(cluster)
        widths = cluster.query("SELECT DISTINCT upper - lower FROM voipbin_partitions()", dbname=OTHER)
        assert [str(w[0]) for w in widths] == ["0:15:00"], widths
        assert now_covered(cluster, OTHER) and now_covered(cluster, OTHER, "15 min")
    finally:
        cluster.set_conf(voipbin__event_retention=None)
    # an event inserted at once lands in its partition
    cluster.execute("INSERT INTO voipbin_events (event_type, data) VALUES ('x', '{}')", dbname=OTHER)
    assert count(cluster, "voipbin_events_default", db=OTHER) == 0


def test_partitions_exist_when_the_update_to_1_2_returns(cluster):
    cluster.execute("DROP EXTENSION IF EXISTS voipbin CASCADE", dbname=OTHER)
    cluster.execute("CREATE EXTENSION voipbin VERSION '1.1'", dbname=OTHER)
    assert cluster.query("SELECT * FROM voipbin_partitions()", dbname=OTHER) == []
    cluster.execute("ALTER EXTENSION voipbin UPDATE TO '1.2'", dbname=OTHER)
    assert now_covered(cluster, OTHER) and now_covered(cluster, OTHER, "1 day")


def test_a_restore_makes_no_partitions_of_its_own(cluster):
    """pg_dump and pg_restore set row_security off before CREATE
    EXTENSION: the dump brings its partitions, which must not collide."""
    cluster.execute("DROP EXTENSION IF EXISTS voipbin CASCADE", dbname=OTHER)
    cluster.execute("SET row_security = off; CREATE EXTENSION voipbin", dbname=OTHER)
    assert cluster.query("SELECT * FROM voipbin_partitions()", dbname=OTHER) == []


def log_lines(c, needle, since=0):
    return [line for line in c.read_log()[since:].splitlines() if needle in line]


def test_a_database_that_does_not_exist_is_waited_for(fake, secret_dir):
    c = Cluster(FAST, dbname="appp")
    try:
        # started as Cluster.start() would, without creating the database
        c.run_as_postgres("pg_ctl", "-D", c.data, "-l", c.log, "-w", "-t", "60", "start")
        wait_until(lambda: log_lines(c, 'voipbin.database "appp" does not exist'),
                   timeout=15, what="the worker's warning")
        waiter = c.query_one("SELECT pid, datname FROM pg_stat_activity WHERE backend_type = 'voipbin'",
                             dbname="postgres")
        assert waiter and waiter[1] is None, "it waits connected to no database: %r" % (waiter,)
        # an observation over a window, not a synchronisation: nothing more is logged
        time.sleep(8)
        assert len(log_lines(c, 'voipbin.database "appp" does not exist')) == 1, c.read_log()
        assert len(log_lines(c, 'database "appp" does not exist')) <= 2, c.read_log()
        assert len(log_lines(c, "FATAL")) <= 1, c.read_log()
        assert c.query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'voipbin'",
                           dbname="postgres")[0] == waiter[0], "the same worker waits: no restarts"

        # the reason, readable from a database with the extension
        c.execute("CREATE DATABASE elsewhere", dbname="postgres")
        warnings = run_with_notices(c, "CREATE EXTENSION voipbin", dbname="elsewhere")
        assert len(warnings) == 1 and 'serves database "appp"' in warnings[0], warnings
        s = status_in(c, "elsewhere")
        assert_other_database(s, served="appp")
        assert s["last_error"].endswith('voipbin.database "appp" does not exist'), s

        # a fast shutdown while it waits takes less than a second
        start = time.monotonic()
        c.stop("fast")
        took = time.monotonic() - start
        assert took < 1.0, "fast shutdown took %.2f s while waiting for the database" % took

        c.run_as_postgres("pg_ctl", "-D", c.data, "-l", c.log, "-w", "-t", "60", "start")
        wait_until(lambda: len(log_lines(c, 'voipbin.database "appp" does not exist')) == 2,
                   timeout=15, what="the worker's warning after the restart")
        mark = len(c.read_log())
        # the database appears: the worker connects to it and serves it
        c.execute("CREATE DATABASE appp", dbname="postgres")
        c.execute("CREATE EXTENSION voipbin")
        point_at(c, fake, secret_dir)
        c.wait_status(lambda s: s["state"] == "connected", timeout=15, what="connected to appp")
        assert c.query_one("SELECT datname FROM pg_stat_activity WHERE backend_type = 'voipbin'",
                           dbname="postgres")[0] == "appp"
        assert log_lines(c, 'database "appp" exists now', since=mark)
        assert not log_lines(c, "FATAL", since=mark), c.read_log()[mark:]
        topic = subscribe(c, fake, "customer_id:%s:call:call_" % fake.customer_id)
        assert topic
        fake.publish("call_ringing", call(fake))
        wait_until(lambda: count(c) == 1, what="an event stored in appp")
        assert_other_database(status_in(c, "elsewhere"), served="appp")
    finally:
        c.destroy()
