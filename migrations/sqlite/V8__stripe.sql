-- Stripe (seeds 003 and 004). Seed 003's `payments` with its column names (`id`,
-- `gateway_transaction_id` = the payment intent, `payment_status`, `captured_at`,
-- `gateway_response`, `metadata` with the disputes), keyed by (source, gateway_transaction_id);
-- `refunds` and `disputes` by Stripe id; `order_status_history`, appended when a payment tied to
-- an order (`metadata.order_id`) changes status; `subscriptions` and `user_plans` (seed 004).
-- Amounts are exact: `_minor` integers in the currency's smallest unit, as Stripe sends them,
-- beside decimals (numeric affinity, so they compare as numbers). Times are RFC 3339 text. The
-- `*_event_at` columns hold the `created` time of the Stripe event behind what the row says, so
-- that a late, older event never overwrites a newer one; `field_events` (JSON) names the event
-- each value came from, where one row is fed by several kinds of Stripe object.
CREATE TABLE payments (
    id                           TEXT PRIMARY KEY,
    source                       TEXT NOT NULL DEFAULT 'stripe',
    gateway_transaction_id       TEXT NOT NULL,
    gateway                      TEXT NOT NULL DEFAULT 'stripe',
    order_id                     TEXT,
    charge_id                    TEXT,
    customer                     TEXT,
    customer_email               TEXT,
    description                  TEXT,
    payment_method               TEXT,
    amount                       DECIMAL,
    amount_minor                 INTEGER,
    amount_captured_minor        INTEGER,
    amount_refunded              DECIMAL,
    amount_refunded_minor        INTEGER NOT NULL DEFAULT 0,
    currency                     TEXT,
    payment_status               TEXT NOT NULL,           -- pending | requires_action | paid | failed | canceled | refunded | partially_refunded
    lifecycle_status             TEXT,                    -- the same before refunds are laid over it
    failure_code                 TEXT,
    failure_message              TEXT,
    captured_at                  DATETIME,
    canceled_at                  DATETIME,
    gateway_response             TEXT,                    -- JSON: the newest Stripe object (client_secret removed)
    metadata                     TEXT,                    -- JSON: the object's metadata, plus "disputes"
    refunds                      TEXT,                    -- JSON: the refunds known one by one
    charge_amount_refunded_minor INTEGER,                 -- the charge's own total, as of charge_reported_at
    charge_reported_at           DATETIME,
    field_events                 TEXT,                    -- field → [event created, event id]
    status_event_at              DATETIME,
    last_event_id                TEXT,
    last_event_at                DATETIME,
    created_at                   DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at                   DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (source, gateway_transaction_id)
);
CREATE INDEX idx_payments_order_id ON payments (order_id);
CREATE INDEX idx_payments_charge_id ON payments (charge_id);
CREATE INDEX idx_payments_status ON payments (payment_status);
CREATE INDEX idx_payments_updated_at ON payments (updated_at DESC);

CREATE TABLE refunds (
    id                     INTEGER PRIMARY KEY,
    source                 TEXT NOT NULL DEFAULT 'stripe',
    refund_id              TEXT NOT NULL,
    gateway_transaction_id TEXT,
    charge_id              TEXT,
    amount                 DECIMAL,
    amount_minor           INTEGER NOT NULL,
    currency               TEXT,
    status                 TEXT NOT NULL,                 -- pending | requires_action | succeeded | failed | canceled
    reason                 TEXT,
    failure_reason         TEXT,
    requested_at           DATETIME,
    metadata               TEXT,
    status_event_at        DATETIME,
    last_event_id          TEXT,
    last_event_at          DATETIME,
    created_at             DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at             DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (source, refund_id)
);
CREATE INDEX idx_refunds_payment ON refunds (gateway_transaction_id);

CREATE TABLE disputes (
    id                     INTEGER PRIMARY KEY,
    source                 TEXT NOT NULL DEFAULT 'stripe',
    dispute_id             TEXT NOT NULL,
    gateway_transaction_id TEXT,
    charge_id              TEXT,
    amount                 DECIMAL,
    amount_minor           INTEGER NOT NULL,
    currency               TEXT,
    reason                 TEXT,
    status                 TEXT NOT NULL,                 -- needs_response | under_review | won | lost | warning_* | …
    evidence_due_by        DATETIME,
    opened_at              DATETIME,
    closed_at              DATETIME,
    status_event_at        DATETIME,
    last_event_id          TEXT,
    last_event_at          DATETIME,
    created_at             DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at             DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (source, dispute_id)
);
CREATE INDEX idx_disputes_payment ON disputes (gateway_transaction_id);

CREATE TABLE order_status_history (
    id                     INTEGER PRIMARY KEY,
    source                 TEXT NOT NULL,
    order_id               TEXT NOT NULL,
    gateway_transaction_id TEXT NOT NULL,
    old_payment_status     TEXT,
    new_payment_status     TEXT NOT NULL,
    event_id               TEXT NOT NULL,
    event_type             TEXT NOT NULL,
    changed_at             DATETIME NOT NULL,             -- the event's created time
    created_at             DATETIME NOT NULL,
    UNIQUE (source, event_id, gateway_transaction_id)
);
CREATE INDEX idx_order_status_history_order ON order_status_history (source, order_id);

CREATE TABLE subscriptions (
    id                    INTEGER PRIMARY KEY,
    source                TEXT NOT NULL DEFAULT 'stripe',
    subscription_id       TEXT NOT NULL,
    customer              TEXT,
    email                 TEXT,
    user_id               TEXT,
    status                TEXT,                           -- Stripe's: incomplete | trialing | active | past_due | unpaid | canceled | …
    price_id              TEXT,
    plan                  TEXT,
    amount                DECIMAL,
    amount_minor          INTEGER,
    currency              TEXT,
    interval              TEXT,
    current_period_start  DATETIME,
    current_period_end    DATETIME,
    started_at            DATETIME,
    cancel_at             DATETIME,
    canceled_at           DATETIME,
    ended_at              DATETIME,
    latest_invoice_id     TEXT,
    latest_invoice_status TEXT,                           -- paid | payment_failed
    latest_invoice_at     DATETIME,
    metadata              TEXT,
    field_events          TEXT,
    status_event_at       DATETIME,
    last_event_id         TEXT,
    last_event_at         DATETIME,
    created_at            DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at            DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (source, subscription_id)
);
CREATE INDEX idx_subscriptions_customer ON subscriptions (customer);
CREATE INDEX idx_subscriptions_email ON subscriptions (email);

CREATE TABLE user_plans (
    id                   INTEGER PRIMARY KEY,
    source               TEXT NOT NULL DEFAULT 'stripe',
    customer             TEXT NOT NULL,
    email                TEXT,
    user_id              TEXT,
    plan                 TEXT,
    price_id             TEXT,
    plan_status          TEXT NOT NULL,                   -- active | inactive
    subscription_id      TEXT,
    subscription_status  TEXT,
    current_period_start DATETIME,
    current_period_end   DATETIME,
    activated_at         DATETIME,
    deactivated_at       DATETIME,
    field_events         TEXT,
    status_event_at      DATETIME,
    last_event_id        TEXT,
    last_event_at        DATETIME,
    created_at           DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at           DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (source, customer)
);
CREATE INDEX idx_user_plans_email ON user_plans (email);
CREATE INDEX idx_user_plans_user_id ON user_plans (user_id);

-- Seed 003's webhook_events, as a view of the journal so its monitoring SQL runs as written:
-- `processed` is true once the delivery was applied (or ignored), `error_message` is the last
-- attempt's error, `payload` the body when it is JSON. It replaces the first view (V6 on
-- SQLite, V5 on PostgreSQL), which had no payload.
DROP VIEW webhook_events;
CREATE VIEW webhook_events AS
SELECT d.id,
       d.source,
       d.event_type,
       d.event_id,
       CASE WHEN json_valid(CAST(p.body AS TEXT)) THEN CAST(p.body AS TEXT) END AS payload,
       d.status IN ('processed', 'ignored') AS processed,
       d.last_error AS error_message,
       strftime('%Y-%m-%dT%H:%M:%fZ', d.received_at / 1000000.0, 'unixepoch') AS created_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', d.processed_at / 1000000.0, 'unixepoch') AS processed_at,
       d.status
FROM deliveries d
JOIN delivery_payloads p ON p.delivery_id = d.id;
