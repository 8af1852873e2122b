"""After the last fault: wait, with deadlines, until everything the run sent
has arrived — the worker connected, a fence event stored behind every earlier
frame, every gap closed and repaired, nothing buffered, the dead letters of
injected data errors retried, every request of the handler in a final
state."""
import time

from helpers import try_query
from pgcluster import wait_until

from .faults import retry_dead_letters, sql


def gaps_settled(cluster):
    """True once no gap is open and every one is repaired (or will never be)."""
    rows = try_query(lambda: cluster.query(
        "SELECT ended_at IS NOT NULL, repaired_at IS NOT NULL, error FROM voipbin_gaps"))
    if rows is None:
        return None
    return all(ended and (repaired or (err or "").startswith(("not repaired", "repair failed, gave up")))
               for ended, repaired, err in rows)


def settle(rig, load, ctx, log, timeout=240):
    """Returns what did not settle in time (empty when everything did)."""
    deadline = time.monotonic() + timeout
    left = lambda: max(1.0, deadline - time.monotonic())    # noqa: E731
    problems = []
    rig.wait_ready(left())
    # The fence: a last event over the WebSocket, stored only once every frame
    # the worker read before it is (the journal is stored in arrival order).
    for attempt in range(5):
        load.publish_fence()
        fence = load.fence
        if fence.ws_delivered:
            break
        rig.wait_ready(left())
    wait_until(lambda: try_query(lambda: rig.cluster.query_one(
        "SELECT count(*) FROM voipbin_events WHERE resource_id = %s", (fence.resource_id,))[0]),
        timeout=left(), interval=0.1, what="the fence event stored")
    log("fence stored; waiting for the gaps' repair")
    try:
        wait_until(lambda: gaps_settled(rig.cluster), timeout=left(), interval=0.25,
                   what="every gap closed and repaired")
    except AssertionError as e:
        problems.append(str(e))
        problems.extend("gap %s (%s from %s to %s) not repaired: %s" % row for row in try_query(
            lambda: rig.cluster.query("SELECT id, cause, started_at, ended_at, error FROM voipbin_gaps"
                                      " WHERE repaired_at IS NULL")) or [])
    try:
        rig.cluster.wait_status(lambda s: s["buffered_bytes"] == 0, timeout=left(),
                                what="nothing buffered")
    except AssertionError as e:
        problems.append(str(e))
    # the handler's requests: each sent and answered, or given up on
    try:
        wait_until(lambda: try_query(lambda: rig.cluster.query_one(
            "SELECT count(*) = 0 FROM voipbin_requests WHERE state IN ('queued', 'sending')")[0]),
            timeout=left(), interval=0.25, what="every request in a final state")
    except AssertionError as e:
        problems.append(str(e))
    # dead letters an injected error made after its fault's own retry
    if retry_dead_letters(rig, ctx):
        log("retried the dead letters left")
    return problems


def snapshot(rig):
    """What the account reads, once everything has settled."""
    c = rig.cluster
    return {
        "events": sql(c, "SELECT id, event_type, resource_id::text, data, source,"
                         " extract(epoch FROM received_at)::float8 FROM voipbin_events", fetch=True),
        "dead_letters": sql(c, "SELECT id, error FROM voipbin_dead_letters", fetch=True),
        "runs": sql(c, "SELECT event_id, count(*) FROM chaos_runs GROUP BY 1", fetch=True),
        "gaps": sql(c, "SELECT id, extract(epoch FROM started_at)::float8, extract(epoch FROM ended_at)::float8,"
                       " extract(epoch FROM repaired_at)::float8, events_repaired, error, cause, frames_lost"
                       " FROM voipbin_gaps ORDER BY id", fetch=True),
        "requests": sql(c, "SELECT id, path, body->>'text', state, attempts, status"
                           " FROM voipbin_requests ORDER BY id", fetch=True),
        "writes": rig.fake.writes(),
        "status": c.status(),
        "log": c.read_log(),
    }
