-- voipbin--1.0--1.1.sql: from the released 1.0 to 1.1.
--
-- 1.0 is frozen (voipbin--1.0.sql never changes); every change to the
-- extension's SQL objects goes here.  A fresh CREATE EXTENSION runs 1.0 and
-- then this file, so a fresh install and an upgraded one are the same objects
-- (test/test_upgrade.py compares their catalogs).
\echo Use "ALTER EXTENSION voipbin UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Status: the columns 1.1 adds, at the end (the library also serves a
-- database still at 1.0, whose declaration is a prefix of this one).
-- ---------------------------------------------------------------------------
DROP FUNCTION voipbin_status();
CREATE FUNCTION voipbin_status(
    OUT state text,
    OUT connected_since timestamptz,
    OUT last_frame_at timestamptz,
    OUT frames_received bigint,
    OUT events_stored bigint,
    OUT duplicates bigint,
    OUT dead_letters bigint,
    OUT reconnects bigint,
    OUT last_error text,
    OUT worker_pid integer,
    OUT buffered_bytes bigint,
    OUT frames_lost bigint,
    OUT webhook_state text,
    OUT webhook_received bigint,
    OUT webhook_refused bigint,
    OUT last_gap_at timestamptz)
    AS 'MODULE_PATHNAME', 'voipbin_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_status() IS 'What the voipbin worker is doing, and its counters since it started';
GRANT EXECUTE ON FUNCTION voipbin_status() TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Durability: the journal position, stored in the transaction of each batch
-- ---------------------------------------------------------------------------
-- How far each journal of the worker is stored: written in the transaction
-- that stores a batch, so that after a crash exactly what no commit covered
-- is replayed.  A position is about this server's journal files: it is not
-- dumped, a restore elsewhere starts with none.
CREATE TABLE voipbin_journal (
    journal_id  text PRIMARY KEY,
    stored_upto bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE voipbin_journal IS
    'How far each journal of the voipbin worker is stored (internal: written by the worker)';
REVOKE ALL ON voipbin_journal FROM PUBLIC;

-- Dead letters stored again, for the user who fixed a handler or a trigger:
-- the worker's own code, in the calling backend and transaction, with the
-- caller's privileges (it needs INSERT on voipbin_events, SELECT, UPDATE and
-- DELETE on voipbin_dead_letters and EXECUTE on voipbin_data_hash).  Not
-- STRICT: NULL means all of them.
CREATE FUNCTION voipbin_retry_dead_letters(ids bigint[] DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'voipbin_retry_dead_letters' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_retry_dead_letters(bigint[]) IS
    'Stores dead letters again as the worker would (all of them when ids is NULL); returns how many became events';
REVOKE EXECUTE ON FUNCTION voipbin_retry_dead_letters(bigint[]) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Security
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Webhook receiver
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Gap repair
-- ---------------------------------------------------------------------------
-- Every outage of the live stream, and every overflow of the journal, is a
-- gap: VoIPBIN keeps no history for a WebSocket client, so what it sent
-- meanwhile is lost unless gap repair reads it back over REST.  A row is
-- written when the gap is known to be over (the re-subscription was sent, or
-- the loss was counted), then updated by the repair.
CREATE SEQUENCE voipbin_gaps_id_seq;
CREATE TABLE voipbin_gaps (
    id              bigint PRIMARY KEY DEFAULT nextval('voipbin_gaps_id_seq'),
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz NOT NULL,
    repaired_at     timestamptz,
    events_repaired bigint NOT NULL DEFAULT 0,
    error           text,
    cause           text NOT NULL DEFAULT 'outage' CHECK (cause IN ('outage', 'overflow')),
    frames_lost     bigint NOT NULL DEFAULT 0,
    CHECK (ended_at >= started_at)
);
ALTER SEQUENCE voipbin_gaps_id_seq OWNED BY voipbin_gaps.id;
CREATE INDEX voipbin_gaps_started_at ON voipbin_gaps (started_at);
COMMENT ON TABLE voipbin_gaps IS
    'Outages of the voipbin worker''s live stream (and journal overflows), and what gap repair fetched back';
COMMENT ON COLUMN voipbin_gaps.started_at IS 'when the connection was lost: its last frame, or its close';
COMMENT ON COLUMN voipbin_gaps.ended_at IS 'when the re-subscription was sent on the new connection';
COMMENT ON COLUMN voipbin_gaps.repaired_at IS 'when gap repair finished; NULL while it runs, failed or is off';
COMMENT ON COLUMN voipbin_gaps.events_repaired IS 'events gap repair stored (source = ''rest''), duplicates not counted';
COMMENT ON COLUMN voipbin_gaps.error IS 'why the repair failed or was partial; NULL when it was complete';
SELECT pg_catalog.pg_extension_config_dump('voipbin_gaps', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_gaps_id_seq', '');
REVOKE ALL ON voipbin_gaps FROM PUBLIC;
