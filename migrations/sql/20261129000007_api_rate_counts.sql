-- The per-credential API request limit, shared by every node: each node counts in memory and
-- adds what it counted to its key's row for the window at most once a second, then reads the
-- cluster-wide total back. One row per key (`user:<id>`, `api_key:<id>`) and fixed minute.
-- Unlogged: a crash forgets the counts, which only forgives a minute's requests. Old windows are
-- deleted by the platform's prune job.
CREATE UNLOGGED TABLE api_rate_counts (
    key          text        NOT NULL,
    window_start timestamptz NOT NULL,
    hits         bigint      NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX api_rate_counts_window_idx ON api_rate_counts (window_start);
