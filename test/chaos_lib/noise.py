"""SQL sessions subscribing and unsubscribing a topic the load never
publishes on (queue calls): the worker sends each change on the live
connection, and not one event of the load may be lost or doubled for it."""
import random
import threading

import psycopg2


def run(rig, seed, stop, counts):
    rng = random.Random("%s/noise" % seed)
    topic = "customer_id:%s:queue:" % rig.fake.customer_id
    subscribed = False
    while not stop.wait(rng.uniform(1, 4)):         # the noise's pace, not a wait for anything
        try:
            conn = rig.cluster.connect()
            try:
                with conn.cursor() as cur:
                    # the topic check asks VoIPBIN, which may be failing right now
                    cur.execute("SET voipbin.http_timeout = '2s'")
                    cur.execute("SELECT voipbin_unsubscribe(%s)" if subscribed
                                else "SELECT voipbin_subscribe(%s)", (topic,))
                subscribed = not subscribed
                counts["unsubscribe" if not subscribed else "subscribe"] += 1
            finally:
                conn.close()
        except psycopg2.Error:
            counts["refused"] += 1      # the server restarting, or REST failing: tried again later


def start(rig, seed, stop):
    counts = {"subscribe": 0, "unsubscribe": 0, "refused": 0}
    t = threading.Thread(target=run, args=(rig, seed, stop, counts), daemon=True)
    t.start()
    return t, counts
