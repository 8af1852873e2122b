#!/bin/sh
# A live transcript feed from psql alone: each transcript line, as it is
# stored, printed as the JSON of its notification (pipe it to jq if you like).
#
#   examples/live_transcripts.sh -d app          # any psql connection options
#
# psql prints the notifications it has received only after a command it runs,
# so after LISTEN it runs an empty query five times a second (\watch would
# not do: it never prints notifications).
set -eu
{
    echo 'LISTEN transcript_created;'
    while sleep 0.2; do
        echo 'SELECT WHERE false;'
    done
} | psql -X -q -At -v ON_ERROR_STOP=1 "$@" |
    sed -u -n 's/^Asynchronous notification "transcript_created" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/p'
