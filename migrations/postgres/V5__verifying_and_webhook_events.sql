-- Deliveries waiting for an attempt are 'pending' or 'verifying' (a lookup at the provider's
-- API proves them): the claim index covers both.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id)
    WHERE status IN ('pending', 'verifying');

-- Seed 003's webhook_events, as a view of the journal, so its monitoring queries run as
-- written (`WHERE created_at > NOW() - INTERVAL '24 hours'`, `processed = false`): processed
-- means applied (or genuine and changing nothing); error_message is the last attempt's error.
CREATE VIEW webhook_events AS
SELECT d.id, d.source, d.event_type, d.event_id,
       d.status IN ('processed', 'ignored') AS processed,
       d.status, d.last_error AS error_message, d.received_at AS created_at, d.processed_at,
       d.attempts
FROM deliveries d;
