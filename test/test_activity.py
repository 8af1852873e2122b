"""What pg_stat_activity says the worker is doing, as PostgreSQL's worker_spi
does: state 'active' and what it is at ("storing 2000 events") while it
works, 'idle' and "idle" while it waits; in parentheses after it, the
connection's state and its topics, whatever it does."""
import re

from pgcluster import wait_until
from test_durability import burst, lock_events
from test_worker import subscribe

BURST = 3000


def activity(cluster):
    return cluster.query_one("SELECT state, query FROM pg_stat_activity WHERE backend_type = 'voipbin'")


def count(cluster):
    return cluster.query_one("SELECT count(*) FROM voipbin_events")[0]


def test_activity_says_storing_during_a_burst_then_idle(vb, fake, topic):
    subscribe(vb, fake, topic + "transcript:transcript_")
    idle = ("idle", "idle (connected, 1 topic)")
    wait_until(lambda: activity(vb) == idle, timeout=20, what="the worker idle with its topic")

    seen = []

    def note():
        now = activity(vb)
        if not seen or seen[-1] != now:
            seen.append(now)
        return now

    # the table locked, the worker waits inside its first batch: what it
    # says then is there to be read however loaded the machine
    locker = lock_events(vb)
    try:
        burst(fake, BURST)
        state, query = wait_until(lambda: (lambda a: a if a[1].startswith("storing") else None)(note()),
                                  timeout=30, what="the worker storing the burst")
        assert state == "active", seen
        m = re.match(r"storing (\d+) events? \(connected, 1 topic\)$", query)
        assert m and 1 <= int(m.group(1)) <= 2000, query
    finally:
        locker.rollback()
        locker.close()

    # the rest of the burst goes through: the display follows, back to idle
    wait_until(lambda: note() and count(vb) == BURST, timeout=60, what="the burst stored")
    wait_until(lambda: note() == idle, timeout=20, what="the worker idle again")
    storing = [q for s, q in seen if q.startswith("storing")]
    assert storing and seen[-1] == idle, seen
    assert all(s == "active" for s, q in seen if q.startswith("storing")), seen
    # what it showed was always one of its own sentences, the connection's state in each
    assert all(q.endswith("(connected, 1 topic)") for _, q in seen), seen


def test_idle_shows_the_connection_and_its_topics(vb, fake, topic):
    wait_until(lambda: activity(vb) == ("idle", "idle (connected, 0 topics)"), timeout=20,
               what="idle, connected, no topic")
    subscribe(vb, fake, topic + "call:call_")
    subscribe(vb, fake, topic + "transcript:transcript_")
    wait_until(lambda: activity(vb) == ("idle", "idle (connected, 2 topics)"), timeout=20,
               what="idle, connected, two topics")
