-- Checkpointed consumers of the log that are not read models (process managers): each one's
-- place in the log, moved in the transaction that does its work (enqueues its jobs).
CREATE TABLE consumer_checkpoints (
    name            text PRIMARY KEY,
    cursor_tx       xid8 NOT NULL,
    cursor_position bigint NOT NULL,
    holder          text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
