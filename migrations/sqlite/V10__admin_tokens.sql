-- Admin API tokens minted by `wharf serve` at first start (when none is configured) and by
-- `wharf token create`. Only the SHA-256 digest is kept: the database never holds a usable
-- token. Times are RFC 3339 text, as in the SQLite ledger.
CREATE TABLE admin_tokens (
    digest     TEXT PRIMARY KEY,   -- lower-case hex SHA-256 of the token
    label      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
