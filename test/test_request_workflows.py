"""The three example workflows that act on VoIPBIN (examples/*.sql), run as a
user would: psql -f, then events from the fake VoIPBIN, then what the fake
received and what voipbin_requests says."""
import os
import subprocess
import uuid

import pytest

from pgcluster import PG_BIN, wait_until
from helpers import call, subscribe, transcript

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
PSQL = os.path.join(PG_BIN, "psql")


def psql_file(cluster, name):
    subprocess.run([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", cluster.sock,
                    "-p", str(cluster.port), "-U", "postgres", "-d", cluster.dbname,
                    "-f", os.path.join(EXAMPLES, name)],
                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   timeout=60, check=True)


@pytest.fixture
def flows(vb):
    yield vb
    vb.execute("DELETE FROM voipbin_handlers")
    vb.execute("DROP FUNCTION IF EXISTS hangup_on_goodbye(voipbin_events),"
               " transcribe_answered_call(voipbin_events), sms_after_hangup(voipbin_events)")


def request_done(cluster, dedupe_key):
    def done():
        r = cluster.query("SELECT state, status FROM voipbin_requests WHERE dedupe_key = %s",
                          (dedupe_key,))
        return r if r and r[0][0] in ("done", "failed", "unknown") else None
    return wait_until(done, timeout=30, what="request %s finished" % dedupe_key)


def test_hangup_when_the_caller_says_goodbye(flows, fake, topic):
    subscribe(flows, fake, topic)
    psql_file(flows, "hangup_on_goodbye.sql")
    psql_file(flows, "hangup_on_goodbye.sql")      # safe to run again
    call_id = fake.add_call(status="progressing")["id"]
    session_id = str(uuid.uuid4())
    fake.publish("transcribe_created", {
        "id": session_id, "customer_id": fake.customer_id, "reference_type": "call",
        "reference_id": call_id, "status": "progressing", "language": "en-US",
        "direction": "both", "provider": "gcp", "tm_create": "2026-02-21T10:05:12.5Z"})
    wait_until(lambda: flows.query_one("SELECT count(*) FROM voipbin_events WHERE resource_id = %s",
                                       (session_id,))[0] == 1, what="the session stored")
    for words, direction in (("hello there", "in"), ("goodbye from the robot", "out"),
                             ("ok, goodbye", "in"), ("Good-bye!", "in")):
        line = transcript(fake, words)
        line.update(transcribe_id=session_id, direction=direction)
        fake.publish("transcript_created", line)
    assert request_done(flows, "hangup:%s" % call_id) == [("done", 200)]
    # two lines said goodbye: one hangup
    assert len(fake.writes(method="POST", path="/calls/%s/hangup" % call_id)) == 1


def test_transcribe_answered_calls(flows, fake, topic):
    subscribe(flows, fake, topic)
    psql_file(flows, "transcribe_answered_calls.sql")
    call_id = fake.add_call(status="progressing")["id"]
    ringing = call(fake, "ringing", call_id)
    fake.publish("call_ringing", ringing)
    fake.publish("call_progressing", call(fake, "progressing", call_id,
                                          tm_progressing="2026-02-21T10:05:12Z"))
    assert request_done(flows, "transcribe:%s" % call_id) == [("done", 200)]
    (w,) = fake.writes(method="POST", path="/transcribes")
    assert w["body"]["reference_id"] == call_id and w["body"]["reference_type"] == "call"
    assert w["body"]["language"] == "en-US"


def test_sms_to_the_caller_after_hangup(flows, fake, topic):
    subscribe(flows, fake, topic)
    psql_file(flows, "sms_after_hangup.sql")
    answered, missed = str(uuid.uuid4()), str(uuid.uuid4())
    fake.publish("call_hangup", call(fake, "hangup", answered, tm_progressing="2026-02-21T10:05:12Z",
                                     tm_hangup="2026-02-21T10:06:12.5Z"))
    fake.publish("call_hangup", call(fake, "hangup", missed, tm_hangup="2026-02-21T10:06:12.5Z"))
    # an outgoing call's hangup sends nothing
    fake.publish("call_hangup", call(fake, "hangup", direction="outgoing"))
    assert request_done(flows, "sms-after-call:%s" % answered) == [("done", 200)]
    assert request_done(flows, "sms-after-call:%s" % missed) == [("done", 200)]
    sent = fake.writes(method="POST", path="/messages")
    assert len(sent) == 2
    texts = sorted(w["body"]["text"] for w in sent)
    assert texts == ["Sorry we missed your call. We will call you back.", "Thank you for your call."]
    for w in sent:
        # from the number called, to the caller
        assert w["body"]["source"] == {"type": "tel", "target": "+15550002"}
        assert w["body"]["destinations"] == [{"type": "tel", "target": "+15550001"}]
    assert flows.query_one("SELECT count(*) FROM voipbin_requests")[0] == 2
