#!/bin/sh
# A live transcript feed from psql alone: each transcript line, as it is
# stored, printed as one line of JSON, {"id": …, "event_type": …,
# "resource_id": …, "data": {…}} (pipe it to jq if you like).
#
#   examples/live_transcripts.sh -d app          # any psql connection options
#
# psql prints the notifications it has received only after a command it runs,
# so after LISTEN it runs an empty query five times a second (\watch would
# not do: it never prints notifications).
#
# A notification is not stored, and psql run from a script does not reconnect:
# it exits when its connection is lost.  So psql runs in a loop (backoff from
# 1 s doubling to 30 s), and each run LISTENs first, then prints the lines
# stored since the last id printed (and those of the 1000 ids before it, for
# a line that committed late), then the notifications; the ids printed are
# remembered, so each line is printed once
# (docs/events.md#listen-clients-that-never-miss-an-event).  What psql cannot
# do: a line read back by the catch-up is the stored row (data as jsonb
# renders it, json_build_object's spacing), not the notification's text; the
# lines come up to 0.2 s late; a link that dies silently is noticed only when
# TCP gives up on it (libpq keepalives: add keepalives_idle=30 to the
# connection string).
set -eu
window=1000
state=$(mktemp)                 # "<first id> <last id printed>", written by the reader
trap 'rm -f "$state" "$state.new"' EXIT
trap 'exit 0' INT TERM

{
    delay=1
    while :; do
        started=$(date +%s)
        {
            echo 'LISTEN transcript_created;'
            if [ -s "$state" ]; then
                read -r floor last < "$state"
                from=$((last - window))
                [ "$from" -ge "$floor" ] || from=$floor
                echo "SELECT 'row ' || json_build_object('id', id, 'event_type', event_type,
                          'resource_id', resource_id, 'data', data)
                      FROM voipbin_events WHERE event_type = 'transcript_created' AND id > $from
                      ORDER BY id;"
            else
                echo "SELECT 'start ' || coalesce(max(id), 0) FROM voipbin_events;"
            fi
            while sleep 0.2; do
                echo 'SELECT WHERE false;'
            done
        } | psql -X -q -At -v ON_ERROR_STOP=1 "$@" || true
        # psql is gone: its connection was lost (or never made)
        [ $(($(date +%s) - started)) -lt 60 ] || delay=1
        echo "connection lost; connecting again in $delay s" >&2
        sleep "$delay"
        delay=$((delay * 2 > 30 ? 30 : delay * 2))
    done
} | {
    floor=0 last=0 seen=' '
    prefix='Asynchronous notification "transcript_created" with payload "'
    while IFS= read -r line; do
        case $line in
            'start '*)
                floor=${line#start } last=${line#start }
                echo "$floor $last" > "$state.new" && mv "$state.new" "$state"
                continue ;;
            'row '*)
                json=${line#row } ;;
            "$prefix"*)
                json=${line#"$prefix"}
                json=${json%'" received from server process with PID '*} ;;
            *)
                continue ;;
        esac
        id=${json#*:}                   # {"id": 42, … or {"id" : 42, …
        id=${id%%,*}
        id=${id# }
        case $seen in *" $id "*) continue ;; esac
        seen="$seen$id "
        if [ "$id" -gt "$last" ]; then
            last=$id kept=' '
            for i in $seen; do
                [ "$i" -le $((last - window)) ] || kept="$kept$i "
            done
            seen=$kept
        fi
        printf '%s\n' "$json"
        echo "$floor $last" > "$state.new" && mv "$state.new" "$state"
    done
}
