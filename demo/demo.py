"""A realistic call through the whole product, watched by a LISTEN client.

Starts the fake VoIPBIN server (TLS, a throwaway CA) and a cluster with the
extension, subscribes to the customer's calls, transcripts and recordings,
publishes a call the way VoIPBIN does today (bare resource objects, some
twice), and prints each NOTIFY as it arrives, then what the tables hold.
"""
import json
import os
import select
import shutil
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test"))

from fakeserver_fixture import start_fake, make_certs  # noqa: E402
from pgcluster import Cluster, wait_until  # noqa: E402


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def the_call(customer_id):
    """call_created → ringing → progressing, transcription, hangup, recording."""
    call_id, transcribe_id, recording_id = (str(uuid.uuid4()) for _ in range(3))
    t0 = time.time()
    call = {
        "id": call_id, "customer_id": customer_id, "owner_type": "", "type": "flow",
        "flow_id": str(uuid.uuid4()),
        "source": {"type": "tel", "target": "+15550100", "target_name": "", "name": "Ada", "detail": ""},
        "destination": {"type": "tel", "target": "+15550199", "target_name": "", "name": "", "detail": ""},
        "direction": "incoming", "tm_create": iso(t0),
    }
    steps = []

    def call_state(status, dt, **extra):
        c = dict(call, status=status, tm_update=iso(t0 + dt), **extra)
        if dt == 0:
            c["tm_update"] = c["tm_create"]
        steps.append(("call_" + (status if dt else "created"), c))

    call_state("dialing", 0)
    call_state("ringing", 0.5, tm_ringing=iso(t0 + 0.5))
    call_state("progressing", 2.0, tm_ringing=iso(t0 + 0.5), tm_progressing=iso(t0 + 2.0))
    steps.append(("recording_started", {
        "id": recording_id, "customer_id": customer_id, "reference_type": "call", "reference_id": call_id,
        "status": "recording", "format": "wav", "tm_start": iso(t0 + 2.1), "tm_create": iso(t0 + 2.1),
        "tm_update": iso(t0 + 2.2)}))
    steps.append(("transcribe_created", {
        "id": transcribe_id, "customer_id": customer_id, "reference_type": "call", "reference_id": call_id,
        "status": "progressing", "language": "en-US", "direction": "both", "provider": "gcp",
        "tm_create": iso(t0 + 2.1), "tm_update": None, "tm_delete": None}))
    lines = [("out", "Thank you for calling Acme. How can I help?"),
             ("in", "Hi, I'd like to check on my order."),
             ("out", "Sure, what is the order number?"),
             ("in", "It's four two seven one."),
             ("out", "It ships tomorrow. Anything else?"),
             ("in", "No, that's all. Thanks!")]
    for i, (direction, text) in enumerate(lines):
        steps.append(("transcript_created", {
            "id": str(uuid.uuid4()), "customer_id": customer_id, "transcribe_id": transcribe_id,
            "direction": direction, "message": text,
            "tm_transcript": "0001-01-01T00:00:%02d.%03dZ" % (3 + 4 * i, 250 * i),
            "tm_create": iso(t0 + 3 + 4 * i)}))
    call_state("hangup", 30.0, tm_ringing=iso(t0 + 0.5), tm_progressing=iso(t0 + 2.0),
               tm_hangup=iso(t0 + 30.0), hangup_by="remote", hangup_reason="normal")
    steps.append(("recording_finished", {
        "id": recording_id, "customer_id": customer_id, "reference_type": "call", "reference_id": call_id,
        "status": "ended", "format": "wav", "tm_start": iso(t0 + 2.1), "tm_end": iso(t0 + 30.0),
        "tm_create": iso(t0 + 2.1), "tm_update": iso(t0 + 30.1)}))
    return steps


def main():
    keep = "--keep" in sys.argv
    work = tempfile.mkdtemp(prefix="voipbin-demo-")
    os.chmod(work, 0o755)
    fake = cluster = None
    try:
        certs = make_certs(work)
        fake = start_fake(work, certs=certs)
        token = os.path.join(work, "token")
        with open(token, "w") as f:
            f.write(fake.accesskey + "\n")
        shutil.chown(token, "postgres", "postgres")
        os.chmod(token, 0o600)
        print("fake VoIPBIN at %s (customer %s)" % (fake.api_url, fake.customer_id))

        cluster = Cluster({"voipbin.api_url": "'%s'" % fake.api_url,
                           "voipbin.ca_file": "'%s'" % fake.ca_file,
                           "voipbin.token_file": "'%s'" % token}, dbname="demo")
        cluster.start()
        cluster.execute("CREATE EXTENSION voipbin")
        cluster.wait_status(lambda s: s["state"] == "connected", what="worker connected")
        print("worker connected:", {k: v for k, v in cluster.status().items()
                                    if k in ("state", "worker_pid")})
        for resource in ("call", "transcript", "transcribe", "recording"):
            topic = cluster.query_one("SELECT voipbin_subscribe(%s)", (resource,))[0]
            print("subscribed", topic)
        fake.wait_state(lambda s: len(s["connections"][0]["topics"]) == 4, what="topics live")

        listener = cluster.connect()
        channels = ["call_created", "call_ringing", "call_progressing", "call_hangup",
                    "transcript_created", "transcribe_created", "recording_started", "recording_finished"]
        for ch in channels:
            listener.cursor().execute("LISTEN %s" % ch)
        print("\nLISTEN %s\n" % ", ".join(channels))

        steps = the_call(fake.customer_id)
        # 3-part topics receive every event twice, as from the real server: the worker dedupes
        fake.publish(events=[{"event_type": t, "data": d} for t, d in steps])
        got = 0
        deadline = time.monotonic() + 15
        while got < len(steps) and time.monotonic() < deadline:
            if select.select([listener], [], [], 0.5)[0]:
                listener.poll()
                while listener.notifies:
                    n = listener.notifies.pop(0)
                    p = json.loads(n.payload)
                    d = p.get("data", {})
                    what = d.get("message") or d.get("status") or ""
                    if n.channel == "transcript_created":
                        what = "[%s] %s" % (d.get("direction"), what)
                    print("  #%-4d %-20s %s" % (p["id"], n.channel, what))
                    got += 1
        print("\n%d of %d events arrived as notifications" % (got, len(steps)))
        s = cluster.status()
        print("status: frames_received=%d events_stored=%d duplicates=%d dead_letters=%d"
              % (s["frames_received"], s["events_stored"], s["duplicates"], s["dead_letters"]))
        for view, sql in [("voipbin_calls", "SELECT status, hangup_reason, tm_hangup - tm_create FROM voipbin_calls"),
                          ("voipbin_transcripts", "SELECT direction, message FROM voipbin_transcripts"
                                                  " ORDER BY transcribe_id, tm_offset")]:
            if cluster.query_one("SELECT to_regclass(%s)", (view,))[0]:
                print("\n%s:" % view)
                for row in cluster.query(sql):
                    print("  ", *row)
        if keep:
            print("\nexplore: runuser -u postgres -- psql -h %s -p %d demo" % (cluster.sock, cluster.port))
            print("publish more: POST http://127.0.0.1:%d/control/publish" % fake.control_port)
            input("press Enter to stop everything ")
        if got != len(steps):
            sys.exit(1)
    finally:
        if cluster:
            cluster.destroy()
        if fake:
            fake.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
