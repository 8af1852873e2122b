-- Errors while storing a batch: which SQLSTATEs keep the batch for a retry,
-- which make dead letters (src/store_errors.c), and the retry backoff.
-- Test entry points of the library, not part of the extension.
\set VERBOSITY terse
CREATE FUNCTION pg_temp.error_kind(text) RETURNS text
    AS '$libdir/voipbin', 'voipbin_store_error_kind' LANGUAGE C STRICT;
CREATE FUNCTION pg_temp.retry_delay(int) RETURNS int
    AS '$libdir/voipbin', 'voipbin_store_retry_delay' LANGUAGE C STRICT;

-- errors of the data: storing the frame again would fail the same way
SELECT code, pg_temp.error_kind(code)
FROM (VALUES ('22P02'), ('22021'), ('22023'), ('22P05'), ('22003'),
             ('23502'), ('23505'), ('23514'), ('P0001'), ('P0004'),
             ('42883'), ('42501'), ('42P01'), ('54001'), ('0A000'),
             ('21000'), ('2D000'), ('2F005'), ('38001'), ('09000'), ('27000')) AS t(code);

-- errors of the moment: the batch is kept and retried
SELECT code, pg_temp.error_kind(code)
FROM (VALUES ('40001'), ('40P01'), ('55P03'), ('55006'), ('55000'),
             ('57014'), ('57P01'), ('57P04'), ('53100'), ('53200'), ('53300'),
             ('08006'), ('58030'), ('XX000'), ('XX001'), ('25006'), ('72000'),
             ('HV00N'), ('F0000'),
             -- a SQLSTATE of a user's own: nothing says the data is at fault
             ('VB001')) AS t(code);

SELECT pg_temp.error_kind('2200');

-- 100 ms, doubling, at most 10 s
SELECT n, pg_temp.retry_delay(n) FROM generate_series(0, 10) n;
SELECT pg_temp.retry_delay(1000000);
