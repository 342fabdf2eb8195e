-- The projection runtime: one row per generation of each projection's read-model tables.
-- A generation's tables live in schema proj_<name>_g<generation>; the public views named after
-- the projection's tables point at the live generation and are swapped atomically.
CREATE TABLE projection_generations (
    name            text        NOT NULL,
    generation      int         NOT NULL,
    version         int         NOT NULL,
    state           text        NOT NULL CHECK (state IN ('building', 'ready', 'live', 'retired')),
    cursor_tx       xid8        NOT NULL DEFAULT '0',
    cursor_position bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    -- The runner holding the projection's lease when it last took this generation over; checked
    -- by every checkpoint write of a live or ready generation (fencing).
    holder          text,
    last_error      text,
    last_error_position text,
    error_count     int         NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, generation)
);
CREATE UNIQUE INDEX projection_generations_one_live ON projection_generations (name) WHERE state = 'live';
