-- The single-event append, the common case, with scalar parameters: the same steps and checks as
-- parley_append (see there), without building and unpacking arrays or looping. Measured ~6%
-- cheaper per call on the server; keep the two in step.
CREATE FUNCTION parley_append_one(
    p_account_id uuid,
    p_stream_type text,
    p_stream_id text,
    p_expected_version bigint,
    p_event_id uuid,
    p_event_type text,
    p_schema_version int,
    p_payload jsonb,
    p_metadata jsonb,
    p_recorded_at timestamptz,
    p_canonical bytea,
    OUT out_position bigint,
    OUT out_transaction_id xid8,
    OUT out_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_head_tx xid8;
    v_prev bytea;
    v_version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_type || '/' || p_stream_id, 0));
    out_transaction_id := pg_current_xact_id();
    SELECT e.version, e.transaction_id, e.hash INTO v_version, v_head_tx, v_prev
      FROM events e
     WHERE e.stream_type = p_stream_type AND e.stream_id = p_stream_id
     ORDER BY e.version DESC
     LIMIT 1;
    IF NOT FOUND THEN
        v_version := 0;
        v_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    END IF;
    IF v_version <> p_expected_version THEN
        RAISE EXCEPTION 'stream %/% is at version %, expected %',
            p_stream_type, p_stream_id, v_version, p_expected_version
            USING ERRCODE = 'PL409', DETAIL = v_version::text;
    END IF;
    IF v_head_tx IS NOT NULL AND v_head_tx > out_transaction_id THEN
        RAISE EXCEPTION 'stream %/% was last written by a younger transaction', p_stream_type, p_stream_id
            USING ERRCODE = 'PL40R';
    END IF;
    out_version := v_version + 1;
    INSERT INTO events (event_id, account_id, stream_type, stream_id, version, event_type,
                        schema_version, payload, metadata, recorded_at, prev_hash, hash)
    VALUES (p_event_id, p_account_id, p_stream_type, p_stream_id, out_version, p_event_type,
            p_schema_version, p_payload, p_metadata, p_recorded_at, v_prev, sha256(v_prev || p_canonical))
    RETURNING position INTO out_position;
END
$$;
