-- The journal became log-first: deliveries reach SQLite from the delivery log, and the
-- highest sequence number applied lives in wharf_meta ('applied_seq').

-- A fingerprint of the body (length and CRC-32), to tell a provider's changed body from a
-- retry of the same one.
ALTER TABLE deliveries ADD COLUMN body_hash INTEGER;

-- The same dedup key arrived again with a different body: answered as a duplicate, kept here
-- for an operator.
CREATE TABLE delivery_conflicts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    received_at INTEGER NOT NULL,              -- unix microseconds
    headers     TEXT    NOT NULL,              -- JSON object, secrets redacted
    body        BLOB    NOT NULL,
    body_hash   INTEGER NOT NULL
);
CREATE INDEX delivery_conflicts_by_delivery ON delivery_conflicts (delivery_id);
