-- The change feed: one row per delivery lifecycle step (received, processed, failed, dead, …)
-- and per ledger row created or updated, inserted in the same transaction as the effect it
-- describes. Transactions of several instances commit in any order, so the stream's position
-- `seq` is not taken at insert: a sequencer numbers committed rows under the lock on
-- `change_feed_head`, held until it commits, so numbers become visible strictly in order and a
-- reader that saw N never later finds a row below N.
CREATE TABLE change_feed (
    id           BIGSERIAL PRIMARY KEY,
    seq          BIGINT UNIQUE,
    at           TIMESTAMPTZ NOT NULL,
    kind         TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    delivery_id  BIGINT,
    event_type   TEXT,
    ledger_table TEXT,
    ledger_key   TEXT,
    data         TEXT
);
CREATE INDEX change_feed_unsequenced ON change_feed (id) WHERE seq IS NULL;

CREATE TABLE change_feed_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    seq      BIGINT NOT NULL
);
INSERT INTO change_feed_head (seq) VALUES (0);
