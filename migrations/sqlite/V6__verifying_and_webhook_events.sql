-- Deliveries waiting for an attempt are 'pending' or 'verifying' (a lookup at the provider's
-- API proves them): the claim index covers both.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id)
    WHERE status IN ('pending', 'verifying');

-- Seed 003's webhook_events, as a view of the journal, so its monitoring queries run as
-- written: processed means applied (or genuine and changing nothing); error_message is the
-- last attempt's error. Times are RFC 3339 text, as every time in the SQLite ledger.
CREATE VIEW webhook_events AS
SELECT d.id, d.source, d.event_type, d.event_id,
       CASE WHEN d.status IN ('processed', 'ignored') THEN 1 ELSE 0 END AS processed,
       d.status, d.last_error AS error_message,
       strftime('%Y-%m-%dT%H:%M:%fZ', d.received_at / 1000000.0, 'unixepoch') AS created_at,
       CASE WHEN d.processed_at IS NOT NULL
            THEN strftime('%Y-%m-%dT%H:%M:%fZ', d.processed_at / 1000000.0, 'unixepoch')
       END AS processed_at,
       d.attempts
FROM deliveries d;
