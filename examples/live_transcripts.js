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
//
// A notification is not stored: one sent while this client is not connected
// never reaches it.  So at every connection it LISTENs first, then reads the
// lines stored past the last id it printed (a lost connection is retried with
// backoff, 0.5 s doubling to 30 s), then takes the notifications, skipping
// the ids it printed already; the catch-up also reads again the WINDOW ids
// before the newest, for a line that committed late
// (docs/events.md#listen-clients-that-never-miss-an-event).
'use strict';

const { Client } = require('pg');

const CHANNEL = 'transcript_created';
const WINDOW = 1000;          // ids read again after a reconnection
const PAGE = 1000;            // rows per catch-up query
const HEARTBEAT_MS = 30000;   // a query when nothing came for this long: a dead link shows
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;

const feed = {
  floor: null,                // max(id) when the feed started: nothing older is caught up
  last: null,                 // the newest id printed (or the floor)
  recent: new Set(),          // ids printed among the last WINDOW ids
};

async function handle(client, id, data) {
  if (feed.recent.has(id)) return;
  if (data === undefined || data === null) {     // truncated, or voipbin.notify_payload = 'id'
    const r = await client.query('SELECT data FROM voipbin_events WHERE id = $1', [id]);
    data = r.rows.length ? r.rows[0].data : null;  // null: already pruned by voipbin.event_retention
  }
  if (data !== null) {
    const r = await client.query(
      'SELECT call_id, tm_offset::text AS tm_offset FROM voipbin_transcripts WHERE transcript_id = $1',
      [data.id]);
    const { call_id: callId = null, tm_offset: offset = null } = r.rows[0] || {};
    const now = new Date().toISOString().slice(11, 19);
    console.log(`${now}  call ${callId || '?'}  +${offset}  ${String(data.direction).padEnd(3)}  ${data.message}`);
  }
  feed.recent.add(id);
  if (id > feed.last) {
    feed.last = id;
    for (const old of feed.recent) if (old <= feed.last - WINDOW) feed.recent.delete(old);
  }
}

// Once LISTEN is in effect: the first time, where the feed starts; after a
// reconnection, the lines stored meanwhile (and late commits), in id order.
async function start(client) {
  if (feed.last === null) {
    const r = await client.query('SELECT coalesce(max(id), 0)::text AS max FROM voipbin_events');
    feed.floor = feed.last = Number(r.rows[0].max);
    return;
  }
  let after = Math.max(feed.floor, feed.last - WINDOW);
  for (;;) {
    const r = await client.query(
      'SELECT id::text AS id, data FROM voipbin_events WHERE event_type = $1 AND id > $2 ORDER BY id LIMIT $3',
      [CHANNEL, after, PAGE]);
    for (const row of r.rows) await handle(client, Number(row.id), row.data);
    if (r.rows.length < PAGE) return;
    after = Number(r.rows[r.rows.length - 1].id);
  }
}

// One connection's life: resolves when it is lost (with the error).
function session(client) {
  return new Promise((resolve) => {
    let queue = Promise.resolve();   // one at a time, so lines print in the order they came
    let heartbeat = null;
    const lost = (err) => {
      clearInterval(heartbeat);
      resolve(err || new Error('connection ended'));
    };
    client.on('error', lost);
    client.on('end', () => lost(null));
    client.on('notification', (msg) => {
      const event = JSON.parse(msg.payload);
      queue = queue.then(() => handle(client, Number(event.id), event.data)).catch(lost);
    });
    queue = queue
      .then(() => client.query(`LISTEN ${CHANNEL}`))   // first: from here on nothing is missed
      .then(() => start(client))                      // then what was stored meanwhile
      .then(() => {
        delay = BACKOFF_MIN_MS;
        heartbeat = setInterval(() => {
          queue = queue.then(() => client.query('SELECT 1')).catch(lost);
        }, HEARTBEAT_MS);
      })
      .catch(lost);
  });
}

let delay = BACKOFF_MIN_MS;
let client = null;

async function main() {
  for (;;) {
    client = new Client(process.argv[2] ? { connectionString: process.argv[2] } : {});
    let err;
    try {
      await client.connect();
      err = await session(client);
    } catch (e) {
      err = e;
    }
    if (stopping) return;
    client.removeAllListeners();
    client.on('error', () => {});    // a late error of the dead connection
    client.end().catch(() => {});
    // an ERROR of a statement (a missing grant, say) is no lost connection: stop
    if (err.severity === 'ERROR') throw err;
    console.error(`connection lost: ${err.message.split(/\s+/).join(' ')}; connecting again in ${delay / 1000} s`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, BACKOFF_MAX_MS);
  }
}

let stopping = false;
const stop = () => {
  stopping = true;
  (client ? client.end().catch(() => {}) : Promise.resolve()).then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
main().catch((err) => { console.error(err.message); process.exit(1); });
