-- Signals too large for a NOTIFY payload (WebRTC session descriptions): kept here for the moment
-- it takes every node to read them, then pruned. Unlogged: they are not facts, and a crash may
-- lose them as it loses the connections they were for.
CREATE UNLOGGED TABLE signals (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
