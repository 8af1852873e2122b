"""test/chaos's modules: one job each (see test/README.md, "The chaos run").

rig       the cluster, the fake VoIPBIN, the webhook receiver, the SQL the run needs
ledger    every event the run published, and how each copy went
load      call life-cycles published over the WebSocket and by webhooks
schedule  the faults of a run, drawn from its seed
faults    how each fault is injected and cleared
noise     sessions subscribing and unsubscribing a topic the load never uses
memory    the worker's RssAnon, sampled throughout
settle    the wait, after the faults, until everything has arrived
account   every event accounted for, and the table
"""
