-- Login protection counters, shared by every node: one row per limited key (client IP, email)
-- and fixed window. Unlogged: a crash forgets the counts, which only forgives a few attempts.
CREATE UNLOGGED TABLE rate_limits (
    key          text        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits         int         NOT NULL
);
