// A live transcript feed from Node: one line per transcript line, as VoIPBIN
// delivers it.
//
//   cd examples && npm install            # the `pg` client, from package.json
//   node live_transcripts.js postgres://app@localhost/app    # or PG* variables
//
// Each line is announced by `NOTIFY transcript_created` when the worker
// commits it.  The payload carries the event, or past 7,900 bytes only its id
// ("truncated": true), and then the row is read from voipbin_events.  The call
// comes from voipbin_transcripts once the transcription session is in.
'use strict';

const { Client } = require('pg');

async function lineOf(client, event) {
  let data = event.data;
  if (data === undefined) {
    const r = await client.query('SELECT data FROM voipbin_events WHERE id = $1', [event.id]);
    if (r.rows.length === 0) return null;  // already pruned by voipbin.event_retention
    data = r.rows[0].data;
  }
  const r = await client.query(
    'SELECT call_id, tm_offset::text AS tm_offset FROM voipbin_transcripts WHERE transcript_id = $1',
    [data.id]);
  const { call_id: callId = null, tm_offset: offset = null } = r.rows[0] || {};
  const now = new Date().toISOString().slice(11, 19);
  return `${now}  call ${callId || '?'}  +${offset}  ${String(data.direction).padEnd(3)}  ${data.message}`;
}

async function main() {
  const client = new Client(process.argv[2] ? { connectionString: process.argv[2] } : {});
  await client.connect();
  // one at a time, so lines print in the order they were stored
  let printed = Promise.resolve();
  client.on('notification', (msg) => {
    printed = printed
      .then(() => lineOf(client, JSON.parse(msg.payload)))
      .then((line) => { if (line !== null) console.log(line); })
      .catch((err) => console.error(err.message));
  });
  client.on('error', (err) => { console.error(err.message); process.exit(1); });
  await client.query('LISTEN transcript_created');
  const stop = () => client.end().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err) => { console.error(err.message); process.exit(1); });
