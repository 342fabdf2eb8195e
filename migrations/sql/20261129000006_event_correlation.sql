-- The audit API follows a request's consequences by correlation id (and the dashboard shows an
-- event's chain): find them without reading the account's whole log.
CREATE INDEX events_correlation_idx ON events ((metadata->>'correlation_id'))
    WHERE metadata ? 'correlation_id';
