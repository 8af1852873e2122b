"""Runs last: after everything above, the credential is nowhere in the server log.

The one exception is Postgres's own "parameter "voipbin.token" changed to …"
line, which a reload of voipbin.token writes and no extension can prevent
(SPEC.md: rotate credentials through voipbin.token_file instead)."""
from fakeserver_fixture import ACCESSKEY, JWT


def test_credential_never_in_server_log(cluster):
    lines = [l for l in cluster.read_log().splitlines()
             if 'parameter "voipbin.token" changed to' not in l]
    leaked = [l for l in lines if ACCESSKEY in l or JWT in l]
    assert not leaked, leaked
