-- The durable job queue (parley-jobs). Operational state, not domain facts: nothing here is an
-- event, and rows are pruned by state.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    account_id       uuid NOT NULL,
    kind             text NOT NULL,
    queue            text NOT NULL,
    priority         smallint NOT NULL DEFAULT 0,
    -- available, scheduled, running, retryable, completed, discarded (the dead set), cancelled
    state            text NOT NULL,
    attempt          int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL,
    run_at           timestamptz NOT NULL,
    args             jsonb NOT NULL DEFAULT '{}',
    unique_key       text,
    -- One entry per failed attempt: {attempt, at, error}.
    errors           jsonb NOT NULL DEFAULT '[]',
    correlation_id   uuid,
    causation_id     uuid,
    inserted_at      timestamptz NOT NULL,
    attempted_at     timestamptz,
    completed_at     timestamptz,
    -- The node running it, and until when its lease holds without a heartbeat.
    leased_by        text,
    lease_expires_at timestamptz
) WITH (fillfactor = 70);
-- Claiming: the ready jobs of a queue in order. Partial, so finished jobs cost it nothing.
CREATE INDEX jobs_ready_idx ON jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Rescuing the jobs of dead nodes.
CREATE INDEX jobs_running_idx ON jobs (lease_expires_at) WHERE state = 'running';
-- Unique jobs: one row per (kind, key and period) that is waiting, running or completed; a dead
-- or cancelled one frees the key (as Oban's default unique states do).
CREATE UNIQUE INDEX jobs_unique_idx ON jobs (kind, unique_key)
    WHERE unique_key IS NOT NULL AND state NOT IN ('discarded', 'cancelled');
-- Pruning by state and age; the dead set's listing.
CREATE INDEX jobs_finished_idx ON jobs (state, completed_at)
    WHERE state IN ('completed', 'discarded', 'cancelled');
-- Listing an account's jobs, newest first.
CREATE INDEX jobs_account_idx ON jobs (account_id, inserted_at DESC, id DESC);

-- Cron: the last tick each schedule enqueued, so that a tick enqueues exactly once across nodes.
CREATE TABLE cron_ticks (
    name      text PRIMARY KEY,
    last_tick timestamptz NOT NULL
);
