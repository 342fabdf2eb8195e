-- Credentials that end (a session ended, a user's roles changed, an API key revoked) are also
-- announced on their own channel, by the transaction that records them: NOTIFY is delivered at
-- commit, straight to every node, without waiting for the commit-safe horizon of the log (which an
-- old open transaction anywhere in the cluster can hold back). The log stays the record; this is
-- only the fast path of the news.
CREATE FUNCTION parley_notify_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('parley_revocations', json_build_object(
        'event_type', NEW.event_type,
        'account_id', NEW.account_id,
        'stream_id',  NEW.stream_id,
        'version',    NEW.version,
        'session_id', NEW.payload->>'session_id',
        'api_key_id', NEW.payload->>'api_key_id'
    )::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify_revocation
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.event_type IN ('SessionEnded', 'UserRolesChanged', 'ApiKeyRevoked'))
    EXECUTE FUNCTION parley_notify_revocation();
