-- The first schema, as the foundation shipped it. Idempotent (IF NOT EXISTS) so that a database
-- made before migrations were tracked by refinery adopts this history without error.
-- The journal: every genuine delivery and where it stands. Rows stay small (no payload) so
-- that a status change rewrites a few bytes, not the body.
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    source          TEXT    NOT NULL,
    event_id        TEXT,
    event_type      TEXT    NOT NULL,
    dedup_key       TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,          -- unix microseconds
    status          TEXT    NOT NULL,          -- pending | processed | failed | dead | ignored
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER,                   -- unix microseconds, while pending
    processed_at    INTEGER,                   -- unix microseconds
    body_bytes      INTEGER NOT NULL,
    UNIQUE (source, dedup_key)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';

-- What the provider sent, exactly, written once and never updated.
CREATE TABLE IF NOT EXISTS delivery_payloads (
    delivery_id INTEGER PRIMARY KEY REFERENCES deliveries (id),
    headers     TEXT NOT NULL,                 -- JSON object, secrets redacted
    body        BLOB NOT NULL                  -- exactly as received
);

-- Every processing attempt, with its error.
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

-- Seed 000's sales table, column for column. Money is exact: `price` and `commission_value`
-- hold decimal text (SQLite would turn a DECIMAL column into a binary float), and the
-- `_minor` columns hold integer minor units for arithmetic.
CREATE TABLE IF NOT EXISTS sales (
    id                  TEXT PRIMARY KEY,
    cartpanda_id        TEXT UNIQUE NOT NULL,
    customer_email      TEXT NOT NULL,
    customer_name       TEXT NOT NULL,
    product_name        TEXT NOT NULL,
    product_id          TEXT,
    price               TEXT NOT NULL,
    currency            TEXT DEFAULT 'BRL',
    status              TEXT NOT NULL,
    affiliate_code      TEXT,
    affiliate_name      TEXT,
    commission_value    TEXT,
    payment_method      TEXT,
    transaction_id      TEXT,
    webhook_received_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    metadata            TEXT,
    created_at          TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    price_minor         INTEGER NOT NULL,
    commission_minor    INTEGER,
    status_event_at     INTEGER
);
CREATE INDEX IF NOT EXISTS idx_sales_customer_email ON sales (customer_email);
CREATE INDEX IF NOT EXISTS idx_sales_affiliate_code ON sales (affiliate_code);
CREATE INDEX IF NOT EXISTS idx_sales_created_at ON sales (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_sales_status ON sales (status);

-- Seed 000's updated_at trigger: a hand-made UPDATE that leaves updated_at alone still moves it.
CREATE TRIGGER IF NOT EXISTS update_sales_updated_at AFTER UPDATE ON sales
FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE sales SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
END;

CREATE TABLE IF NOT EXISTS wharf_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
