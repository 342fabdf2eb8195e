-- The event log: the single source of truth. See DESIGN.md "The event store".
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL UNIQUE,
    account_id      uuid        NOT NULL,
    stream_type     text        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL,
    schema_version  int         NOT NULL CHECK (schema_version > 0),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_type, stream_id, version)
);

-- Commit-safe global order: readers scan (transaction_id, position).
CREATE INDEX events_commit_order_idx ON events (transaction_id, position);
-- Audit queries are per account in log order.
CREATE INDEX events_account_idx ON events (account_id, transaction_id, position);
CREATE INDEX events_account_type_idx ON events (account_id, event_type, transaction_id, position);

-- The log is append-only. Tamper tests disable this trigger on purpose; verification then
-- finds the altered row through the hash chain.
CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'PL001';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

-- Locks several streams, in the order given (callers sort them, so two writers never deadlock),
-- before the transaction id is assigned.
CREATE FUNCTION parley_lock_streams(p_keys text[]) RETURNS xid8 LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    FOREACH k IN ARRAY p_keys LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
    END LOOP;
    RETURN pg_current_xact_id();
END
$$;

-- Locks a stream for the rest of the transaction, assigns the transaction id (after the lock, so
-- that commit-safe order follows the lock order) and returns the stream head.
CREATE FUNCTION parley_lock_stream(p_stream_type text, p_stream_id text)
RETURNS TABLE (head_version bigint, head_transaction_id xid8, head_position bigint, head_account_id uuid,
               head_hash bytea, current_xid xid8)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_type || '/' || p_stream_id, 0));
    current_xid := pg_current_xact_id();
    SELECT e.version, e.transaction_id, e.position, e.account_id, e.hash
      INTO head_version, head_transaction_id, head_position, head_account_id, head_hash
      FROM events e
     WHERE e.stream_type = p_stream_type AND e.stream_id = p_stream_id
     ORDER BY e.version DESC
     LIMIT 1;
    IF NOT FOUND THEN
        head_version := 0;
        head_hash := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    END IF;
    RETURN NEXT;
END
$$;

-- Appends one event to a stream with an expected version, chaining its hash; the rules of the
-- log live here and only here. It takes the stream's lock, *then* the transaction id (so that
-- commit-safe order follows each stream's version order), checks the expected version and that the
-- head was not written by a younger transaction, and inserts with
-- hash = sha256(prev_hash || canonical), where the canonical bytes are defined once, in
-- eventstore::hash.
-- Errors: PL409 (expected version mismatch, DETAIL = actual version),
--         PL40R (the stream's head was written by a younger transaction: retry).
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

-- Appends several events to one stream: each through parley_append_one, which sees the previous
-- one (same transaction) as the head, so versions, hash links and checks are the same rules.
CREATE FUNCTION parley_append(
    p_account_id uuid,
    p_stream_type text,
    p_stream_id text,
    p_expected_version bigint,
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
          FROM parley_append_one(p_account_id, p_stream_type, p_stream_id, p_expected_version + i - 1,
                                 p_event_ids[i], p_event_types[i], p_schema_versions[i], p_payloads[i],
                                 p_metadata[i], p_recorded_at, p_canonical[i]) AS a;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Aggregate snapshots: a cache, never the truth. Safe to delete at any time.
CREATE TABLE snapshots (
    stream_type     text        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL,
    state_version   int         NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_type, stream_id)
);

-- Cross-aggregate uniqueness (one email per user, one direct conversation per pair), written in
-- the append's transaction.
CREATE TABLE claims (
    kind            text        NOT NULL,
    value           text        NOT NULL,
    account_id      uuid        NOT NULL,
    owner_stream_type text      NOT NULL,
    owner_stream_id text        NOT NULL,
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

-- Stored responses of commands sent with an Idempotency-Key, written in the append's transaction.
CREATE TABLE idempotency_records (
    account_id      uuid        NOT NULL,
    scope           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    status          int         NOT NULL,
    response        jsonb       NOT NULL,
    position        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, scope, key)
);
CREATE INDEX idempotency_records_created_idx ON idempotency_records (created_at);
