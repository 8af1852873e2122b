-- voipbin--1.0.sql: the extension's tables, functions and privileges.
\echo Use "CREATE EXTENSION voipbin" to load this file. \quit

-- One row per distinct event, in arrival order.
-- Plain sequences rather than identity columns: pg_extension_config_dump can
-- only take a sequence that is itself a member of the extension, and without
-- it a restore would start the ids again at 1.
CREATE SEQUENCE voipbin_events_id_seq;
CREATE SEQUENCE voipbin_dead_letters_id_seq;

CREATE TABLE voipbin_events (
    id          bigint PRIMARY KEY DEFAULT nextval('voipbin_events_id_seq'),
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL DEFAULT 'websocket',
    event_type  text NOT NULL,
    resource    text,
    resource_id uuid,
    customer_id uuid,
    data        jsonb NOT NULL
);
COMMENT ON TABLE voipbin_events IS 'VoIPBIN events received by the voipbin worker, one row per distinct event';

-- Duplicates are normal on VoIPBIN; the same type, resource and payload is stored once.
-- The payload's key is the MD5 of its canonical jsonb bytes (cheaper than of its text).
CREATE FUNCTION voipbin_data_hash(data jsonb) RETURNS uuid
    AS 'MODULE_PATHNAME', 'voipbin_data_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION voipbin_data_hash(jsonb) IS
    'The dedupe key of an event payload: MD5 of its jsonb bytes';
CREATE UNIQUE INDEX voipbin_events_dedupe
    ON voipbin_events (event_type, resource_id, voipbin_data_hash(data)) NULLS NOT DISTINCT;
CREATE INDEX voipbin_events_received_at ON voipbin_events (received_at);
CREATE INDEX voipbin_events_resource_id ON voipbin_events (resource_id);

-- The topics the worker keeps subscribed.
CREATE TABLE voipbin_subscriptions (
    topic      text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'active', 'rejected')),
    last_error text
);
COMMENT ON TABLE voipbin_subscriptions IS 'VoIPBIN topics the voipbin worker keeps subscribed';

-- Frames that could not become events, exactly as received.
CREATE TABLE voipbin_dead_letters (
    id          bigint PRIMARY KEY DEFAULT nextval('voipbin_dead_letters_id_seq'),
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL DEFAULT 'websocket',
    raw         bytea NOT NULL,
    error       text
);
CREATE INDEX voipbin_dead_letters_received_at ON voipbin_dead_letters (received_at);
COMMENT ON TABLE voipbin_dead_letters IS 'Frames the voipbin worker could not turn into events, with the reason';

ALTER SEQUENCE voipbin_events_id_seq OWNED BY voipbin_events.id;
ALTER SEQUENCE voipbin_dead_letters_id_seq OWNED BY voipbin_dead_letters.id;

SELECT pg_catalog.pg_extension_config_dump('voipbin_events', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_dead_letters_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_dead_letters', '');

-- Any change to the subscriptions wakes the worker when it commits.
CREATE FUNCTION voipbin_subscriptions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'voipbin_subscriptions_changed' LANGUAGE C;
CREATE TRIGGER voipbin_subscriptions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON voipbin_subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION voipbin_subscriptions_changed();

CREATE FUNCTION voipbin_normalize_topic(topic text, own_customer_id uuid DEFAULT NULL)
    RETURNS text
    AS 'MODULE_PATHNAME', 'voipbin_normalize_topic' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION voipbin_normalize_topic(text, uuid) IS
    'Checks a VoIPBIN topic and returns it as voipbin_subscribe would store it';

-- REST: customer and webhook
-- C functions calling VoIPBIN's REST API from the calling backend.  Not
-- SECURITY DEFINER: they read the credential setting directly, and return
-- nothing of it; EXECUTE is for whom a superuser grants it.
CREATE FUNCTION voipbin_customer() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'voipbin_customer' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_customer() IS
    'GET /customer: the VoIPBIN customer of the credential, webhook_secret masked';

-- PUT /customer blanks every field it is not sent: GET, then PUT all seven.
CREATE FUNCTION voipbin_set_webhook(uri text, method text DEFAULT 'POST') RETURNS jsonb
    AS 'MODULE_PATHNAME', 'voipbin_set_webhook' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_set_webhook(text, text) IS
    'Sets the VoIPBIN customer webhook, keeping every other field; returns the customer';

CREATE FUNCTION voipbin_clear_webhook() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'voipbin_clear_webhook' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_clear_webhook() IS
    'Removes the VoIPBIN customer webhook, keeping every other field; returns the customer';

-- voipbin_normalize_topic plus the own customer id (GET /customer, once per
-- backend): expands 'call', refuses another customer's topic.
CREATE FUNCTION voipbin_resolve_topic(topic text, check_owner boolean DEFAULT true)
    RETURNS text
    AS 'MODULE_PATHNAME', 'voipbin_resolve_topic' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_resolve_topic(text, boolean) IS
    'A topic as voipbin_subscribe stores it, checked against the own VoIPBIN customer';

REVOKE EXECUTE ON FUNCTION voipbin_customer() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_set_webhook(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_clear_webhook() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_resolve_topic(text, boolean) FROM PUBLIC;

CREATE FUNCTION voipbin_subscribe(topic text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    normalized text := @extschema@.voipbin_resolve_topic(topic);
BEGIN
    -- subscribing a rejected topic again gives it one more try
    INSERT INTO @extschema@.voipbin_subscriptions AS s (topic) VALUES (normalized)
    ON CONFLICT ON CONSTRAINT voipbin_subscriptions_pkey DO UPDATE
        SET status = 'pending', last_error = NULL
        WHERE s.status = 'rejected';
    RETURN normalized;
END
$$;
COMMENT ON FUNCTION voipbin_subscribe(text) IS
    'Subscribes the worker to a VoIPBIN topic (within 100 ms of commit); returns the stored topic';

CREATE FUNCTION voipbin_unsubscribe(topic text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    normalized text := @extschema@.voipbin_resolve_topic(topic, false);
BEGIN
    DELETE FROM @extschema@.voipbin_subscriptions s WHERE s.topic = normalized;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION voipbin_unsubscribe(text) IS
    'Unsubscribes the worker from a VoIPBIN topic; false if it was not subscribed';

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
    OUT buffered_bytes bigint)
    AS 'MODULE_PATHNAME', 'voipbin_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_status() IS 'What the voipbin worker is doing, and its counters since it started';

CREATE FUNCTION voipbin_reconnect() RETURNS void
    AS 'MODULE_PATHNAME', 'voipbin_reconnect' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION voipbin_reconnect() IS 'Drops and re-opens the VoIPBIN WebSocket now';

CREATE FUNCTION voipbin_classify(frame text,
    OUT event_type text,
    OUT resource text,
    OUT resource_id uuid,
    OUT customer_id uuid,
    OUT data jsonb)
    AS 'MODULE_PATHNAME', 'voipbin_classify' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION voipbin_classify(text) IS
    'How the worker turns one WebSocket frame into an event (raises for a frame that is none)';

-- Nothing is open to PUBLIC but the status.
REVOKE ALL ON voipbin_events, voipbin_subscriptions, voipbin_dead_letters FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_subscriptions_changed() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_normalize_topic(text, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_subscribe(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_unsubscribe(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_reconnect() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_classify(text) FROM PUBLIC;
-- the dedupe index calls it: a role that may INSERT into voipbin_events needs it too
REVOKE EXECUTE ON FUNCTION voipbin_data_hash(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION voipbin_status() TO PUBLIC;

-- Workflows: views and handlers
--
-- VoIPBIN delivers events out of order and more than once, with timestamps in
-- two formats (docs/voipbin-protocol.md, section 4).  The views below answer
-- "what is the state of this call" and "what was said" without the user having
-- to know that; handlers run user functions in the transaction that stores an
-- event, so a workflow is one function and one voipbin_on().

-- Built from immutable parts only: text::timestamptz would read TimeZone for
-- the zone-less older form, and is only STABLE.  So the result is the same in
-- every session, and the function can be used in an index.
CREATE FUNCTION voipbin_timestamp(t text) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    m text[];
    local timestamp;
BEGIN
    -- unset: JSON null or absent (NULL here), and the older 9999 sentinel
    IF t IS NULL OR t IN ('', 'null') OR t LIKE '9999-%' THEN
        RETURN NULL;
    END IF;
    m := regexp_match(t, '^\s*(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d(?:\.\d+)?)\s*(?:[Zz]|([+-])(\d\d)(?::?(\d\d))?)?\s*$');
    IF m IS NULL THEN
        RAISE EXCEPTION 'invalid VoIPBIN timestamp: "%"', t
            USING ERRCODE = 'invalid_datetime_format',
                  HINT = 'VoIPBIN writes 2026-02-21T10:05:15.1Z (RFC 3339) or 2022-04-11 06:10:58.431000 (UTC).';
    END IF;
    local := make_timestamp(m[1]::int, m[2]::int, m[3]::int, m[4]::int, m[5]::int, m[6]::float8);
    -- the older form has no zone and is UTC, like Z
    IF m[7] IS NOT NULL THEN
        local := local - make_interval(hours => (m[7] || m[8])::int,
                                       mins => (m[7] || coalesce(m[9], '0'))::int);
    END IF;
    RETURN local AT TIME ZONE 'UTC';
END
$$;
COMMENT ON FUNCTION voipbin_timestamp(text) IS
    'A VoIPBIN timestamp (RFC 3339 or the older "2022-04-11 06:10:58.431000", UTC) as timestamptz; NULL when unset';

-- A transcript's tm_transcript is an offset into the transcription, which
-- VoIPBIN encodes as a time on day 0001-01-01.
CREATE FUNCTION voipbin_offset(t text) RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN @extschema@.voipbin_timestamp(t) - '0001-01-01 00:00:00+00'::timestamptz;
COMMENT ON FUNCTION voipbin_offset(text) IS
    'A VoIPBIN offset (tm_transcript: a time on day 0001-01-01) as interval; NULL when unset';

-- One row per call, from its latest state.  Ordering is by VoIPBIN's own
-- tm_update, not by arrival; at equal times the further status wins, then the
-- later arrival, so the same event stored twice (under two event types, say)
-- changes nothing.  Only the winner's other timestamps are parsed.
CREATE VIEW voipbin_calls AS
SELECT c.resource_id AS call_id,
       c.data->>'status' AS status,
       c.data->>'direction' AS direction,
       c.data->'source'->>'target' AS source_target,
       c.data->'destination'->>'target' AS destination_target,
       nullif(c.data->>'hangup_by', '') AS hangup_by,
       nullif(c.data->>'hangup_reason', '') AS hangup_reason,
       voipbin_timestamp(c.data->>'tm_create') AS tm_create,
       voipbin_timestamp(c.data->>'tm_ringing') AS tm_ringing,
       voipbin_timestamp(c.data->>'tm_progressing') AS tm_progressing,
       voipbin_timestamp(c.data->>'tm_hangup') AS tm_hangup,
       voipbin_timestamp(c.data->>'tm_update') AS tm_update,
       c.id AS last_event_id
FROM (SELECT DISTINCT ON (e.resource_id) e.id, e.resource_id, e.data
      FROM voipbin_events e
      WHERE e.resource = 'call' AND e.resource_id IS NOT NULL
      ORDER BY e.resource_id,
               coalesce(voipbin_timestamp(e.data->>'tm_update'),
                        voipbin_timestamp(e.data->>'tm_create')) DESC NULLS LAST,
               array_position(ARRAY['dialing', 'ringing', 'progressing', 'canceling',
                                    'terminating', 'hangup'], e.data->>'status') DESC NULLS LAST,
               e.id DESC) c;
COMMENT ON VIEW voipbin_calls IS
    'One row per VoIPBIN call, in the state of its event with the greatest tm_update';

-- One row per transcript line, the first copy that arrived.  The call comes
-- from the transcription session, which may arrive after its lines: the view
-- is computed when read, so the line gets its call_id once the session is in.
-- A session's events all name the same reference; transcribe_created is
-- preferred, the others stand in when it was stored under another type.
CREATE VIEW voipbin_transcripts AS
SELECT t.resource_id AS transcript_id,
       (t.data->>'transcribe_id')::uuid AS transcribe_id,
       s.call_id,
       t.data->>'direction' AS direction,
       t.data->>'message' AS message,
       voipbin_offset(t.data->>'tm_transcript') AS tm_offset,
       voipbin_timestamp(t.data->>'tm_create') AS tm_create
FROM voipbin_events t
LEFT JOIN LATERAL (
    SELECT CASE WHEN s.data->>'reference_type' = 'call'
                THEN nullif(s.data->>'reference_id', '00000000-0000-0000-0000-000000000000')::uuid
           END AS call_id
    FROM voipbin_events s
    WHERE s.resource = 'transcribe'
      AND s.resource_id = (t.data->>'transcribe_id')::uuid
      AND s.data ? 'reference_type'
    ORDER BY s.event_type = 'transcribe_created' DESC, s.id
    LIMIT 1) s ON true
WHERE t.resource = 'transcript' AND t.resource_id IS NOT NULL
  AND NOT EXISTS (SELECT FROM voipbin_events d
                  WHERE d.resource = 'transcript' AND d.resource_id = t.resource_id
                    AND d.id < t.id);
COMMENT ON VIEW voipbin_transcripts IS
    'One row per VoIPBIN transcript line, with the call its transcription belongs to';

-- Handlers: user functions f(e voipbin_events) RETURNS void, run for each
-- stored event of their type.  The function is kept by its qualified
-- signature, not as regprocedure: pg_upgrade refuses tables with regprocedure
-- columns, and an OID would not survive pg_dump.  A plain sequence, as for
-- the events, so that the ids continue after a restore.
CREATE SEQUENCE voipbin_handlers_id_seq;
CREATE TABLE voipbin_handlers (
    id         bigint PRIMARY KEY DEFAULT nextval('voipbin_handlers_id_seq'),
    event_type text NOT NULL,
    handler    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT voipbin_handlers_event_type_handler_key UNIQUE (event_type, handler)
);
ALTER SEQUENCE voipbin_handlers_id_seq OWNED BY voipbin_handlers.id;
COMMENT ON TABLE voipbin_handlers IS
    'Functions run for each stored VoIPBIN event of a type, in id order (see voipbin_on)';
SELECT pg_catalog.pg_extension_config_dump('voipbin_handlers', '');
SELECT pg_catalog.pg_extension_config_dump('voipbin_handlers_id_seq', '');

-- The worker runs as a superuser.  A handler owned by anyone else must be
-- SECURITY DEFINER, or its owner could run anything as a superuser by
-- changing its body.
CREATE FUNCTION voipbin_on(event_type text, handler regprocedure) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p pg_proc;
BEGIN
    IF event_type IS NULL OR handler IS NULL THEN
        RAISE EXCEPTION 'voipbin_on needs an event type and a handler'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF event_type !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid VoIPBIN event type: "%"', event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Event types are lower case, as in call_hangup or transcript_created.';
    END IF;
    SELECT * INTO p FROM pg_proc WHERE oid = handler;
    IF p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
       OR p.proargtypes[0] <> '@extschema@.voipbin_events'::regtype
       OR p.prorettype <> 'void'::regtype THEN
        RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
            USING ERRCODE = 'invalid_object_definition',
                  DETAIL = 'A handler is a function that takes one argument of type voipbin_events and returns void.',
                  HINT = 'Declare it as CREATE FUNCTION f(e voipbin_events) RETURNS void.';
    END IF;
    IF p.pronamespace = pg_my_temp_schema() THEN
        RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'It is a temporary function, which the voipbin worker cannot see.';
    END IF;
    IF NOT p.prosecdef AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = p.proowner) THEN
        RAISE EXCEPTION 'function % cannot be a voipbin handler', handler
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Handlers run in the voipbin worker, as a superuser; its owner is not one.',
                  HINT = format('ALTER FUNCTION %s SECURITY DEFINER, so that it runs with its owner''s privileges.', handler);
    END IF;
    INSERT INTO @extschema@.voipbin_handlers (event_type, handler)
    VALUES (voipbin_on.event_type, (pg_identify_object('pg_proc'::regclass, handler, 0)).identity)
    ON CONFLICT ON CONSTRAINT voipbin_handlers_event_type_handler_key DO NOTHING;
END
$$;
COMMENT ON FUNCTION voipbin_on(text, regprocedure) IS
    'Runs handler(e voipbin_events) for each stored event of this type, in the transaction that stores it';

CREATE FUNCTION voipbin_off(event_type text, handler regprocedure) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    DELETE FROM @extschema@.voipbin_handlers h
    WHERE h.event_type = voipbin_off.event_type
      AND h.handler = (pg_identify_object('pg_proc'::regclass, voipbin_off.handler, 0)).identity;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION voipbin_off(text, regprocedure) IS
    'Stops running a handler for an event type; false if it was not registered';

-- The event types that have handlers, for the WHEN clause of the trigger
-- below.  Declared IMMUTABLE, which it is not, on purpose: Postgres folds an
-- immutable call in a trigger's WHEN clause to a constant when each statement
-- starts, so the worker's batch insert asks voipbin_handlers once, each row
-- costs an array lookup, and an event whose type has no handler queues no
-- trigger call at all.  Each statement sees the handlers committed before it
-- started.  Nothing else should call it: a cached plan would keep its answer.
CREATE FUNCTION voipbin_handled_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    RETURN (SELECT coalesce(array_agg(DISTINCT h.event_type), '{}')
            FROM @extschema@.voipbin_handlers h);
COMMENT ON FUNCTION voipbin_handled_types() IS
    'Event types with handlers; for the WHEN clause of the voipbin_run_handlers trigger only';

-- Runs in whatever transaction inserts the event, the worker's included: it
-- sets no search_path, so handlers see the one they would see in a trigger,
-- and names everything it uses by schema.  A handler's error is the insert's
-- error, so the worker dead-letters that event alone.
CREATE FUNCTION voipbin_run_handlers() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    h record;
BEGIN
    FOR h IN
        SELECT r.handler, p.oid AS fn, p.prosecdef OR a.rolsuper AS trusted,
               pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'
                   OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p.proname) AS name
        FROM @extschema@.voipbin_handlers r
        LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(r.handler)
        LEFT JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
        LEFT JOIN pg_catalog.pg_roles a ON a.oid OPERATOR(pg_catalog.=) p.proowner
        WHERE r.event_type OPERATOR(pg_catalog.=) NEW.event_type
        ORDER BY r.id
    LOOP
        IF h.fn IS NULL THEN
            RAISE EXCEPTION 'voipbin handler % for % does not exist', h.handler, NEW.event_type
                USING ERRCODE = 'undefined_function',
                      HINT = pg_catalog.format('If it was renamed or moved, register it again with voipbin_on and DELETE FROM voipbin_handlers WHERE handler = %L.', h.handler);
        END IF;
        IF NOT h.trusted THEN
            RAISE EXCEPTION 'voipbin handler % is neither SECURITY DEFINER nor owned by a superuser', h.handler
                USING ERRCODE = 'insufficient_privilege',
                      HINT = pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER, so that it runs with its owner''s privileges.', h.handler);
        END IF;
        EXECUTE 'SELECT ' OPERATOR(pg_catalog.||) h.name OPERATOR(pg_catalog.||) '($1)' USING NEW;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION voipbin_run_handlers() IS
    'Trigger on voipbin_events: runs the handlers registered for the new event''s type';
CREATE TRIGGER voipbin_run_handlers AFTER INSERT ON voipbin_events
    FOR EACH ROW WHEN (NEW.event_type = ANY (@extschema@.voipbin_handled_types()))
    EXECUTE FUNCTION voipbin_run_handlers();

-- Dropping a handler's function unregisters it, as DROP ... CASCADE drops a
-- trigger; left registered, it would dead-letter every event of its type.
CREATE FUNCTION voipbin_handlers_dropped() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT h.id, h.event_type, h.handler
        FROM @extschema@.voipbin_handlers h
        JOIN pg_event_trigger_dropped_objects() d
          ON d.classid = 'pg_proc'::regclass AND d.object_identity = h.handler
    LOOP
        DELETE FROM @extschema@.voipbin_handlers WHERE id = r.id;
        RAISE NOTICE 'voipbin handler % for % unregistered', r.handler, r.event_type;
    END LOOP;
END
$$;
COMMENT ON FUNCTION voipbin_handlers_dropped() IS
    'Event trigger: unregisters the handlers whose functions are dropped';
CREATE EVENT TRIGGER voipbin_handlers_dropped ON sql_drop
    EXECUTE FUNCTION voipbin_handlers_dropped();

REVOKE ALL ON voipbin_calls, voipbin_transcripts, voipbin_handlers FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_timestamp(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_offset(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_on(text, regprocedure) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_off(text, regprocedure) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_handled_types() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_run_handlers() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION voipbin_handlers_dropped() FROM PUBLIC;
