"""The system under test: a cluster with the worker, its webhook receiver and
gap repair on, pointed at a fake VoIPBIN of its own; and the SQL the run
relies on (a handler counting its runs and queuing requests, a trigger the
faults switch)."""
import os
import re
import shutil
import subprocess
import tempfile

from fakeserver_fixture import make_certs, start_fake
from helpers import try_query, write_token_file
from pgcluster import Cluster, free_port, wait_until

# Every event type the load publishes (and the fence at the end): the handler
# is registered for each, so that handler runs can be compared with events.
EVENT_TYPES = ("call_created", "call_ringing", "call_progressing", "call_hangup",
               "recording_started", "recording_finished", "transcribe_created",
               "transcribe_done", "transcript_created")

BUFFER_LIMIT_MB = 32
WEBHOOK_PATH = "/voipbin/events"
# The journal's own small filesystem, which the journal_full fault fills
# (docs/failures.md: the disk full); far more than a run's journal needs.
SPOOL_FS_MB = 64

CONF = {
    # short timers, so that outages end and are repaired within a short run
    "voipbin.reconnect_min_delay": "'100ms'",
    "voipbin.reconnect_max_delay": "'1s'",
    "voipbin.idle_timeout": "'3s'",
    "voipbin.http_timeout": "'3s'",
    "voipbin.buffer_limit": "'%dMB'" % BUFFER_LIMIT_MB,
    # VoIPBIN's whole allowance (the default is 10): the outages of a run
    # chain, and their repair reads back every call since the first
    "voipbin.repair_rate": "17",
    # the handler's requests (two a call) drain faster than they come, even
    # after an outage of the REST API
    "voipbin.request_rate": "8",
}

# The trigger the faults switch through chaos_ctl: an error of the moment
# (55P03 or 40P01) for every event while 'transient' is set, a data error for
# some events while 'data_error' is set.  The marker in the message is how the
# account tells injected dead letters from any other.
SQL = """
CREATE TABLE chaos_ctl (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE chaos_runs (event_id bigint NOT NULL, ran_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION chaos_handler(e voipbin_events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_runs (event_id) VALUES (e.id);
    -- requests in the handler's transaction (docs/requests.md): a talk, which
    -- VoIPBIN must not get twice, once a call progresses; a hangup, safe to
    -- repeat (an ended call answers 200 unchanged), once it hung up
    IF e.event_type = 'call_progressing' THEN
        PERFORM voipbin_talk(e.resource_id, 'chaos event ' || e.id);
    ELSIF e.event_type = 'call_hangup' THEN
        PERFORM voipbin_hangup(e.resource_id);
    END IF;
END $$;
CREATE FUNCTION chaos_fault() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE code text;
BEGIN
    SELECT v INTO code FROM chaos_ctl WHERE k = 'transient';
    IF code IS NOT NULL THEN
        RAISE EXCEPTION 'chaos: injected error of the moment' USING ERRCODE = code;
    END IF;
    IF EXISTS (SELECT FROM chaos_ctl WHERE k = 'data_error')
       AND NEW.event_type = 'transcript_created' AND right(NEW.data->>'message', 1) IN ('0', '5') THEN
        RAISE EXCEPTION 'chaos: injected data error' USING ERRCODE = '22023';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_fault AFTER INSERT ON voipbin_events FOR EACH ROW EXECUTE FUNCTION chaos_fault();
"""


class Rig:
    def __init__(self, workdir, plant=None):
        self.workdir = workdir
        self.plant = plant
        self.cluster = None
        self.fake = None
        self.webhook_port = None
        self.topic = None

    def start(self):
        certs = make_certs(os.path.join(self.workdir, "certs"))
        self.fake = start_fake(os.path.join(self.workdir, "fake"), certs=certs,
                               ping_interval=1, pong_timeout=10)
        # VoIPBIN's limiter: the repair must keep within it
        self.fake.config(rate_limit={"rate": 17, "burst": 33})
        secret = tempfile.mkdtemp(prefix="voipbin-chaos-secret-")
        os.chmod(secret, 0o755)
        self.secret_dir = secret
        self.webhook_port = free_port()
        self.spool_dir = self.mount_spool()
        conf = dict(CONF)
        if self.spool_dir:
            conf["voipbin.spool_directory"] = "'%s'" % self.spool_dir
        conf.update({
            "voipbin.api_url": "'%s'" % self.fake.api_url,
            "voipbin.ca_file": "'%s'" % self.fake.ca_file,
            "voipbin.token_file": "'%s'" % write_token_file(secret, self.fake.accesskey),
            "voipbin.webhook_port": str(self.webhook_port),
        })
        self.cluster = Cluster(conf, dbname="chaos")
        self.start_server()
        self.cluster.execute("CREATE EXTENSION voipbin")
        self.cluster.execute(SQL)
        for t in EVENT_TYPES:
            self.cluster.execute("SELECT voipbin_on(%s, 'chaos_handler(voipbin_events)')", (t,))
        # every event of the customer, on both of VoIPBIN's topics: each twice
        self.topic = "customer_id:%s:" % self.fake.customer_id
        self.cluster.execute("SELECT voipbin_subscribe(%s)", (self.topic,))
        self.wait_ready(30)

    def mount_spool(self):
        """A size-limited tmpfs for voipbin.spool_directory, or None where
        this process may not mount (the journal_full fault is then skipped,
        with a note)."""
        path = os.path.join(self.workdir, "spool")
        os.makedirs(path)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0700" % SPOOL_FS_MB,
                            "voipbin-chaos-spool", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            self.spool_note = "the journal's filesystem could not be mounted: %s" % r.stdout.decode().strip()
            os.rmdir(path)
            return None
        self.spool_mounted = path
        subprocess.run(["chown", "postgres:postgres", path], check=True)
        return path

    def umount_spool(self):
        if getattr(self, "spool_mounted", None):
            # lazily: a server process may still be going away
            subprocess.run(["umount", "-l", self.spool_mounted], check=False)
            self.spool_mounted = None

    def start_server(self):
        """pg_ctl start, with the planted fault's variable in the server's
        environment (every server process reads it in voipbin_fault())."""
        c = self.cluster
        if not self.plant:
            c.start()
            return
        subprocess.run(["runuser", "-u", "postgres", "--", "env", "VOIPBIN_FAULT=" + self.plant,
                        os.path.join(c.bindir, "pg_ctl"), "-D", c.data, "-l", c.log, "-w",
                        "-t", "60", "start"], check=True, timeout=90,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not c.query_one("SELECT 1 FROM pg_database WHERE datname = %s", (c.dbname,),
                           dbname="postgres"):
            c.execute("CREATE DATABASE %s" % c.dbname, dbname="postgres")

    def restart_server(self, mode):
        r = self.cluster.stop(mode)
        if r.returncode != 0:
            raise AssertionError("pg_ctl stop -m %s: %s" % (mode, r.stdout))
        self.start_server()

    def wait_ready(self, timeout):
        """The worker connected with its topic sent, the receiver listening."""
        wait_until(lambda: try_query(lambda: self.cluster.status()["state"] == "connected"
                                     and "listening on" in (self.cluster.status()["webhook_state"] or "")),
                   timeout=timeout, interval=0.1, what="the worker connected and the receiver listening")
        self.fake.wait_topics([self.topic], timeout=timeout)

    def worker_pid(self):
        return try_query(self.cluster.worker_pid)

    def stop(self, keep=False):
        if self.cluster is not None and not keep:
            self.cluster.destroy()
        elif self.cluster is not None:
            self.cluster.stop("fast")
        if self.fake is not None:
            self.fake.stop()
        # never left mounted, even for a kept run: the journal is stored by then
        self.umount_spool()
        shutil.rmtree(getattr(self, "secret_dir", "/nonexistent"), ignore_errors=True)


def crash_lines(log_text):
    """(pid, signal) of every server process the postmaster saw die of a signal."""
    return [(int(m.group(1)), int(m.group(2))) for m in
            re.finditer(r"\(PID (\d+)\) was terminated by signal (\d+)", log_text)]
