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

-- ---------------------------------------------------------------------------
-- Security
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Webhook receiver
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Gap repair
-- ---------------------------------------------------------------------------
