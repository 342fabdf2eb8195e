-- parley_append_all may also be told, per event, which event the stream's head must be (NULL:
-- any): the first append of a stream in a group commit decided on the state a group still in
-- flight left names that group's last event of the stream. The version alone does not prove it:
-- when the group in flight fails and other writers append as many events meanwhile, the version
-- matches a head the decision never saw. The form without heads stays for nodes of the previous
-- release, as the same rules with none.
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
    p_canonical bytea[],
    p_expected_heads uuid[])
RETURNS TABLE (out_position bigint, out_transaction_id xid8, out_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_n int := coalesce(array_length(p_event_ids, 1), 0);
    v_tx xid8;
    -- The streams of the call seen so far, with their head's version and hash.
    v_keys text[] := '{}';
    v_heads bigint[] := '{}';
    v_hashes bytea[] := '{}';
    -- Per event: its version and its hash links.
    v_versions bigint[] := '{}';
    v_prevs bytea[] := '{}';
    v_links bytea[] := '{}';
    v_key text;
    v_at int;
    v_version bigint;
    v_head_tx xid8;
    v_head_id uuid;
    v_prev bytea;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- One lock per stream, in the order every multi-stream writer takes them (no deadlocks).
    FOR v_key IN
        SELECT DISTINCT (s.t || '/' || s.i) COLLATE "C" AS k
          FROM unnest(p_stream_types, p_stream_ids) AS s(t, i)
         ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(v_key, 0));
    END LOOP;
    v_tx := pg_current_xact_id();
    FOR i IN 1 .. v_n LOOP
        v_key := p_stream_types[i] || '/' || p_stream_ids[i];
        v_at := array_position(v_keys, v_key);
        IF v_at IS NULL THEN
            SELECT e.version, e.transaction_id, e.hash, e.event_id INTO v_version, v_head_tx, v_prev, v_head_id
              FROM events e
             WHERE e.stream_type = p_stream_types[i] AND e.stream_id = p_stream_ids[i]
             ORDER BY e.version DESC
             LIMIT 1;
            IF NOT FOUND THEN
                v_version := 0;
                v_head_tx := NULL;
                v_head_id := NULL;
                v_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
            END IF;
            -- In parley_append_one's order: the version first, then the head's age.
            IF v_version <> p_expected_versions[i] THEN
                RAISE EXCEPTION 'stream %/% is at version %, expected %',
                    p_stream_types[i], p_stream_ids[i], v_version, p_expected_versions[i]
                    USING ERRCODE = 'PL409', DETAIL = v_version::text;
            END IF;
            IF p_expected_heads[i] IS NOT NULL AND v_head_id IS DISTINCT FROM p_expected_heads[i] THEN
                RAISE EXCEPTION 'stream %/% is at version % with another head event than %',
                    p_stream_types[i], p_stream_ids[i], v_version, p_expected_heads[i]
                    USING ERRCODE = 'PL409', DETAIL = v_version::text;
            END IF;
            IF v_head_tx IS NOT NULL AND v_head_tx > v_tx THEN
                RAISE EXCEPTION 'stream %/% was last written by a younger transaction',
                    p_stream_types[i], p_stream_ids[i]
                    USING ERRCODE = 'PL40R';
            END IF;
            v_keys := v_keys || v_key;
            v_heads := v_heads || v_version;
            v_hashes := v_hashes || v_prev;
            v_at := array_length(v_keys, 1);
        END IF;
        v_version := v_heads[v_at];
        IF v_version <> p_expected_versions[i] THEN
            RAISE EXCEPTION 'stream %/% is at version %, expected %',
                p_stream_types[i], p_stream_ids[i], v_version, p_expected_versions[i]
                USING ERRCODE = 'PL409', DETAIL = v_version::text;
        END IF;
        v_prev := v_hashes[v_at];
        v_versions := v_versions || (v_version + 1);
        v_prevs := v_prevs || v_prev;
        v_links := v_links || sha256(v_prev || p_canonical[i]);
        v_heads[v_at] := v_version + 1;
        v_hashes[v_at] := v_links[i];
    END LOOP;
    -- Positions are drawn in the order of the call (the rows are inserted in `ord` order), so a
    -- stream's versions follow its positions, as readers expect.
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO events (event_id, account_id, stream_type, stream_id, version, event_type,
                            schema_version, payload, metadata, recorded_at, prev_hash, hash)
        SELECT u.event_id, u.account_id, u.stream_type, u.stream_id, u.version, u.event_type,
               u.schema_version, u.payload, u.metadata, p_recorded_at, u.prev_hash, u.hash
          FROM unnest(p_event_ids, p_account_ids, p_stream_types, p_stream_ids, v_versions, p_event_types,
                      p_schema_versions, p_payloads, p_metadata, v_prevs, v_links)
               WITH ORDINALITY AS u(event_id, account_id, stream_type, stream_id, version, event_type,
                                    schema_version, payload, metadata, prev_hash, hash, ord)
         ORDER BY u.ord
        RETURNING events.event_id, events.position, events.version)
    SELECT i.position, v_tx, i.version
      FROM inserted i JOIN unnest(p_event_ids) WITH ORDINALITY AS o(event_id, ord) ON o.event_id = i.event_id
     ORDER BY o.ord;
END
$$;

CREATE OR REPLACE FUNCTION parley_append_all(
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
LANGUAGE sql AS $$
    SELECT * FROM parley_append_all(p_account_ids, p_stream_types, p_stream_ids, p_expected_versions,
                                    p_event_ids, p_event_types, p_schema_versions, p_payloads, p_metadata,
                                    p_recorded_at, p_canonical, NULL::uuid[])
$$;
