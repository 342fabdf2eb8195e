-- Appends the events of several streams in one call (a group commit of concurrent commands):
-- event i goes to stream (p_stream_types[i], p_stream_ids[i]) of account p_account_ids[i] at
-- version p_expected_versions[i] + 1, through parley_append_one like every other append, so the
-- rules (lock, expected version, transaction age, hash chain) stay in one place. The caller locks
-- all the streams first (parley_lock_streams), in one consistent order.
CREATE FUNCTION parley_append_all(
    p_account_ids uuid[],
    p_stream_types text[],
    p_stream_ids text[],
    p_expected_versions bigint[],
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions int[],
    p_payloads jsonb[],
    p_metadata jsonb[],
    p_recorded_at timestamptz,
    p_canonical bytea[])
RETURNS TABLE (out_position bigint, out_transaction_id xid8, out_version bigint)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_event_ids, 1), 0) LOOP
        SELECT a.out_position, a.out_transaction_id, a.out_version
          INTO out_position, out_transaction_id, out_version
          FROM parley_append_one(p_account_ids[i], p_stream_types[i], p_stream_ids[i], p_expected_versions[i],
                                 p_event_ids[i], p_event_types[i], p_schema_versions[i], p_payloads[i],
                                 p_metadata[i], p_recorded_at, p_canonical[i]) AS a;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Its one-stream predecessor is no longer called: one function for several events.
DROP FUNCTION parley_append(uuid, text, text, bigint, uuid[], text[], int[], jsonb[], jsonb[], timestamptz, bytea[]);
