-- The retrieval data of the stack's chat-api, and the server-side knob of
-- the slow-retrieval fault.

CREATE TABLE fault_settings (
    name text PRIMARY KEY,
    value double precision NOT NULL
);
INSERT INTO fault_settings (name, value) VALUES ('query_delay_ms', 0);

CREATE TABLE documents (
    id serial PRIMARY KEY,
    topic text NOT NULL,
    title text NOT NULL,
    body text NOT NULL
);
INSERT INTO documents (topic, title, body)
SELECT (ARRAY['billing', 'incidents', 'deploys'])[1 + i % 3],
       'document ' || i,
       repeat('retrieved text ', 40)
FROM generate_series(1, 300) AS i;
CREATE INDEX documents_topic ON documents (topic, id);
ANALYZE documents;

-- Called once per retrieval query (a function in FROM runs once): sleeps
-- for the fault's delay inside the server, so that the query itself is
-- slow, as a missing index or a locked table would make it. The server
-- log gets the requested delay, and then the duration of the query's
-- execute step (log_min_duration_statement), which the benchmark compares
-- with the probe.
CREATE FUNCTION retrieval_delay() RETURNS double precision
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    delay_ms double precision;
BEGIN
    SELECT value INTO delay_ms FROM fault_settings WHERE name = 'query_delay_ms';
    IF delay_ms > 0 THEN
        RAISE LOG 'retrieval_delay planned_ms=%', delay_ms;
        PERFORM pg_sleep(delay_ms / 1000.0);
    END IF;
    RETURN coalesce(delay_ms, 0);
END
$$;
