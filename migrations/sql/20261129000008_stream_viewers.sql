-- Who watches which live stream, one row per subscription of a connection, on any node:
-- written when a viewer subscribes, refreshed by its node while the connection lives, deleted
-- when it leaves; rows of a dead node are swept once older than the presence TTL. A stream's
-- viewer count is its distinct users here. Unlogged: viewing is a signal, not a fact.
CREATE UNLOGGED TABLE stream_viewers (
    connection_id uuid NOT NULL,
    stream_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    node          text NOT NULL,
    seen_at       timestamptz NOT NULL,
    PRIMARY KEY (connection_id, stream_id)
);
CREATE INDEX stream_viewers_stream_idx ON stream_viewers (stream_id, user_id);
CREATE INDEX stream_viewers_seen_idx ON stream_viewers (seen_at);

-- The most distinct viewers each stream had at once, kept by the nodes as they count: the
-- write side reads it when the stream ends, so `StreamEnded` carries the peak into the log.
CREATE TABLE stream_viewer_peaks (
    stream_id uuid PRIMARY KEY,
    peak      bigint NOT NULL
);
