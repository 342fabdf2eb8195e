-- Webhooks. Secrets sign, so they cannot be hashed: they are kept here sealed (ChaCha20-Poly1305
-- under the platform's secrets key), outside the log, which records only their fingerprints.
-- `owner_id` is a subscription or an incoming hook; a rotated secret keeps signing until
-- `valid_until`.
CREATE TABLE webhook_secrets (
    owner_id    uuid NOT NULL,
    account_id  uuid NOT NULL,
    fingerprint text NOT NULL,
    nonce       bytea NOT NULL,
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    valid_until timestamptz,
    PRIMARY KEY (owner_id, fingerprint)
);

-- The webhook fan-out's own state, moved with its checkpoint as it reads the log: which
-- subscriptions want which event types at that point of the log (never a lagging read model,
-- so an event right after a subscription's creation is not missed, nor one before it sent).
CREATE TABLE webhook_routes (
    subscription_id uuid PRIMARY KEY,
    account_id      uuid NOT NULL,
    url             text NOT NULL,
    event_types     text[] NOT NULL,
    enabled         boolean NOT NULL,
    -- Operational: since when deliveries keep failing (NULL after a success).
    failing_since   timestamptz
);
CREATE INDEX webhook_routes_account_idx ON webhook_routes (account_id) WHERE enabled;

-- Every delivery attempt, newest first per subscription.
CREATE TABLE webhook_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      uuid NOT NULL,
    subscription_id uuid NOT NULL,
    event_id        uuid NOT NULL,
    attempt         integer NOT NULL,
    status_code     integer,
    error           text,
    duration_ms     integer NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX webhook_attempts_subscription_idx ON webhook_attempts (subscription_id, at DESC, id DESC);
