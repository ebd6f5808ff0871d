-- Seed 002's collections (Pancake and Pancake POS), one table each. Every row keeps the object
-- as Pancake sent it in `document` (JSONB), merged key by key across deliveries; `id` is a
-- time-ordered UUID. Pancake rows are keyed by (source, page, object id) and POS orders by
-- (source, shop, order id): those ids count per page or shop. POS products, customers and
-- variations have UUIDs and arrive without a shop, so they are keyed by (source, object id)
-- and `shop_id` is filled in when a delivery names it.

CREATE TABLE fb_conversation (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source          TEXT NOT NULL,
    page_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    document        JSONB NOT NULL,
    version         BIGINT,         -- Pancake's conversation version: only a newer one applies
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, page_id, conversation_id)
);

CREATE TABLE fb_message (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source          TEXT NOT NULL,
    page_id         TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    conversation_id TEXT,
    document        JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, page_id, message_id)
);
CREATE INDEX fb_message_by_conversation ON fb_message (source, conversation_id);

CREATE TABLE fb_customer (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source      TEXT NOT NULL,
    page_id     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    document    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, page_id, customer_id)
);

CREATE TABLE pc_order (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source     TEXT NOT NULL,
    page_id    TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    document   JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, page_id, order_id)
);

CREATE TABLE pc_pos_order (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source         TEXT NOT NULL,
    shop_id        TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    status_code    BIGINT,          -- Pancake POS's status code, from the document
    status         TEXT,            -- its English name (new, confirmed, shipped, …)
    total_price    BIGINT,          -- as sent, in the shop currency's unit (VND: đồng)
    document       JSONB NOT NULL,
    pos_updated_at TIMESTAMPTZ,     -- the order's updated_at: only a newer one applies
    status_steps   JSONB NOT NULL,  -- the status history's steps, as JSON
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, shop_id, order_id)
);
CREATE INDEX pc_pos_order_by_status ON pc_pos_order (source, shop_id, status_code);

-- One row per status an order took, at the time it took it; never updated.
CREATE TABLE pc_pos_order_status_history (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source      TEXT NOT NULL,
    shop_id     TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    status      TEXT NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, shop_id, order_id, changed_at, status_code)
);

CREATE TABLE pc_pos_product (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source         TEXT NOT NULL,
    shop_id        TEXT,
    product_id     TEXT NOT NULL,
    document       JSONB NOT NULL,
    pos_updated_at TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, product_id)
);

CREATE TABLE pc_pos_customer (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source         TEXT NOT NULL,
    shop_id        TEXT,
    customer_id    TEXT NOT NULL,
    document       JSONB NOT NULL,
    pos_updated_at TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, customer_id)
);

CREATE TABLE pc_pos_variation (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source          TEXT NOT NULL,
    shop_id         TEXT,
    variation_id    TEXT NOT NULL,
    remain_quantity BIGINT,         -- sellable stock in all warehouses
    warehouse_stock JSONB,          -- {"warehouse_id": remain_quantity, …}
    document        JSONB NOT NULL,
    pos_updated_at  TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (source, variation_id)
);

-- The orders view across sources gains Pancake's chat orders and Pancake POS orders, keyed
-- by (source, external_id) with the shop or page in the id (POS order ids count per shop).
-- POS amounts are as sent, in the shop currency's unit (VND: đồng).
DROP VIEW all_orders;
CREATE VIEW all_orders AS
SELECT source, cartpanda_id AS external_id, customer_email, customer_name,
       product_name AS product, price AS amount, currency, status, created_at, updated_at
FROM sales
UNION ALL
SELECT source, order_number, email, customer_name, product, COALESCE(total, price), currency,
       status, created_at, updated_at
FROM orders
UNION ALL
SELECT source, shop_id || ':' || order_id, document #>> '{customer,email}',
       COALESCE(document ->> 'bill_full_name', document #>> '{customer,name}'),
       NULL, total_price::numeric, COALESCE(document ->> 'currency', 'VND'), status,
       created_at, updated_at
FROM pc_pos_order
UNION ALL
SELECT source, page_id || ':' || order_id, document #>> '{customer,email}',
       COALESCE(document ->> 'bill_full_name', document #>> '{customer,name}'),
       NULL, CASE WHEN jsonb_typeof(document -> 'total_price') = 'number'
                  THEN (document ->> 'total_price')::numeric END,
       document ->> 'currency', document ->> 'status', created_at, updated_at
FROM pc_order;
