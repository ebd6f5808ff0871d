-- The change feed: one row per delivery lifecycle step (received, processed, failed, dead, …)
-- and per ledger row created or updated, written in the same transaction as the effect it
-- describes. `seq` is the stream's position: the one SQLite writer assigns it in commit
-- order, and AUTOINCREMENT never hands out a number again after old rows are pruned.
CREATE TABLE change_feed (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,             -- unix microseconds
    kind         TEXT    NOT NULL,             -- delivery.received | … | ledger.created | ledger.updated
    source       TEXT    NOT NULL,
    delivery_id  INTEGER,
    event_type   TEXT,
    ledger_table TEXT,
    ledger_key   TEXT,                         -- JSON array of the key's values
    data         TEXT                          -- JSON object: the delivery's step or the row
);
