-- voipbin--1.1--1.2.sql: from 1.1 to 1.2.
--
-- 1.0 and 1.1 are released and frozen (voipbin--1.0.sql and
-- voipbin--1.0--1.1.sql never change); every change to the extension's SQL
-- objects goes here.  A fresh CREATE EXTENSION runs 1.0, then 1.0--1.1, then
-- this file, so a fresh install and an updated one are the same objects
-- (test/test_upgrade.py compares their catalogs).
\echo Use "ALTER EXTENSION voipbin UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Partitions: the partitioned table is locked before its default partition
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION voipbin_maintain_partitions(step interval, retention interval,
                                            OUT created integer, OUT dropped integer,
                                            OUT more boolean, OUT next_drop timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
    AS $$
DECLARE
    cutoff timestamptz := CASE WHEN retention > interval '0' THEN now() - retention END;
    before integer := (SELECT count(*) FROM @extschema@.voipbin_partitions());
    t timestamptz := now();
    part regclass;
    old_part record;
BEGIN
    created := 0;
    dropped := 0;
    more := false;
    BEGIN
        LOOP
            part := @extschema@.voipbin_partition_for(t, step);
            SELECT p.upper INTO t FROM @extschema@.voipbin_partitions() p WHERE p.partition = part;
            EXIT WHEN t > now() + 2 * step;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        -- a long reader of voipbin_events (pg_dump, say): meanwhile the
        -- default partition takes the events; they move at a later pass
        RAISE LOG 'voipbin: voipbin_events is in use; its partitions ahead are made at the next pass';
    END;
    BEGIN
        FOR i IN 1..4 LOOP
            -- the table before its default partition, in the order readers
            -- and TRUNCATE lock them: reading the partition alone first, then
            -- waiting for the table in voipbin_partition_for(), deadlocked
            -- with a TRUNCATE voipbin_events that held the table and waited
            -- for the partition
            LOCK TABLE @extschema@.voipbin_events IN ACCESS SHARE MODE;
            SELECT min(received_at) INTO t FROM @extschema@.voipbin_events_default
            WHERE received_at >= coalesce(cutoff, '-infinity') AND isfinite(received_at);
            EXIT WHEN t IS NULL;
            PERFORM @extschema@.voipbin_partition_for(t, step);
            more := i = 4;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        -- a long reader of voipbin_events: the rows move at the next pass
        RAISE LOG 'voipbin: voipbin_events is in use; rows of its default partition move at the next pass';
        more := false;
    END;
    created := (SELECT count(*) FROM @extschema@.voipbin_partitions()) - before;
    -- Rows of a time past retention (replayed, or left from before 1.1) get
    -- no partition: once the default partition holds nothing within
    -- retention, it is emptied whole, its space (and what moves out of it
    -- left behind) with it, as a partition past retention is dropped, rather
    -- than deleted row by row into a file that keeps its size.
    IF cutoff IS NOT NULL AND NOT more
       AND pg_relation_size('@extschema@.voipbin_events_default') > 0
       AND NOT EXISTS (SELECT FROM @extschema@.voipbin_events_default
                       WHERE received_at >= cutoff) THEN
        BEGIN
            -- the table before its partition, in the order readers lock them
            LOCK TABLE @extschema@.voipbin_events IN ACCESS EXCLUSIVE MODE;
            IF NOT EXISTS (SELECT FROM @extschema@.voipbin_events_default
                           WHERE received_at >= cutoff) THEN
                TRUNCATE @extschema@.voipbin_events_default;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            RAISE LOG 'voipbin: voipbin_events is in use; its default partition is emptied at the next pass';
        END;
    END IF;
    IF cutoff IS NOT NULL THEN
        FOR old_part IN SELECT * FROM @extschema@.voipbin_partitions() WHERE upper <= cutoff LOOP
            BEGIN
                -- the table before its partition, in the order readers lock them
                LOCK TABLE @extschema@.voipbin_events IN ACCESS EXCLUSIVE MODE;
                EXECUTE format('DROP TABLE %s', old_part.partition);
                dropped := dropped + 1;
            EXCEPTION WHEN lock_not_available THEN
                RAISE LOG 'voipbin: partition % is in use; it is dropped at the next pass', old_part.partition;
            END;
        END LOOP;
        next_drop := (SELECT min(p.upper) FROM @extschema@.voipbin_partitions() p) + retention;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Dead letters: what event each one is, so that a copy of it is no second one
-- ---------------------------------------------------------------------------
-- VoIPBIN sends each event on two topics: when its handler fails, both
-- copies fail.  The worker writes what the frame was classified as (NULL for
-- a frame that is no event), and a frame whose event_type, resource_id and
-- data hash match a dead letter still there is counted as a duplicate, not
-- dead-lettered again.  Dead letters from before 1.2 have NULLs here.
ALTER TABLE voipbin_dead_letters
    ADD COLUMN event_type text,
    ADD COLUMN resource_id uuid,
    ADD COLUMN data_hash uuid;
COMMENT ON COLUMN voipbin_dead_letters.event_type IS
    'the event the frame was, NULL when it is no event (or dead-lettered before 1.2)';
COMMENT ON COLUMN voipbin_dead_letters.data_hash IS
    'voipbin_data_hash() of the event''s data: with event_type and resource_id, what makes a copy';
CREATE INDEX voipbin_dead_letters_data_hash ON voipbin_dead_letters (data_hash)
    WHERE data_hash IS NOT NULL;
