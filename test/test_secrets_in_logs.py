"""The credential is nowhere in a server log.

The one exception is Postgres's own "parameter "voipbin.token" changed to …"
line, which a reload of voipbin.token writes and no extension can prevent
(docs/settings.md: rotate credentials through voipbin.token_file instead).

This test reads every cluster's log as it is when the test runs (the
session's cluster and any other made so far, destroyed ones included);
conftest.py's no_credential_in_any_server_log reads them all once more when
the session ends, so no order of the tests lets a leak go unseen."""


def test_credential_never_in_server_log(cluster, no_credential_in_any_server_log):
    leaked = no_credential_in_any_server_log.scan_all()
    assert not leaked, leaked
