-- Seed 002's collections (Pancake and Pancake POS), one table each. Every row keeps the object
-- as Pancake sent it in `document` (JSON text), merged key by key across deliveries; `id` is a
-- time-ordered UUID as text, times are RFC 3339 text, which sorts as time. Pancake rows are
-- keyed by (source, page, object id) and POS orders by (source, shop, order id): those ids
-- count per page or shop. POS products, customers and variations have UUIDs and arrive
-- without a shop, so they are keyed by (source, object id) and `shop_id` is filled in when a
-- delivery names it.

CREATE TABLE fb_conversation (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    page_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    document        TEXT NOT NULL,
    version         INTEGER,       -- Pancake's conversation version: only a newer one applies
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (source, page_id, conversation_id)
);

CREATE TABLE fb_message (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    page_id         TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    conversation_id TEXT,
    document        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (source, page_id, message_id)
);
CREATE INDEX fb_message_by_conversation ON fb_message (source, conversation_id);

CREATE TABLE fb_customer (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    page_id     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    document    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (source, page_id, customer_id)
);

CREATE TABLE pc_order (
    id         TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    page_id    TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    document   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (source, page_id, order_id)
);

CREATE TABLE pc_pos_order (
    id             TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    shop_id        TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    status_code    INTEGER,        -- Pancake POS's status code, from the document
    status         TEXT,           -- its English name (new, confirmed, shipped, …)
    total_price    INTEGER,        -- as sent, in the shop currency's unit (VND: đồng)
    document       TEXT NOT NULL,
    pos_updated_at TEXT,           -- the order's updated_at: only a newer one applies
    status_steps   TEXT NOT NULL,  -- the status history's steps, as JSON
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (source, shop_id, order_id)
);
CREATE INDEX pc_pos_order_by_status ON pc_pos_order (source, shop_id, status_code);

-- One row per status an order took, at the time it took it; never updated.
CREATE TABLE pc_pos_order_status_history (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    shop_id     TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    status      TEXT NOT NULL,
    changed_at  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (source, shop_id, order_id, changed_at, status_code)
);

CREATE TABLE pc_pos_product (
    id             TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    shop_id        TEXT,
    product_id     TEXT NOT NULL,
    document       TEXT NOT NULL,
    pos_updated_at TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (source, product_id)
);

CREATE TABLE pc_pos_customer (
    id             TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    shop_id        TEXT,
    customer_id    TEXT NOT NULL,
    document       TEXT NOT NULL,
    pos_updated_at TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (source, customer_id)
);

CREATE TABLE pc_pos_variation (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    shop_id         TEXT,
    variation_id    TEXT NOT NULL,
    remain_quantity INTEGER,       -- sellable stock in all warehouses
    warehouse_stock TEXT,          -- {"warehouse_id": remain_quantity, …}
    document        TEXT NOT NULL,
    pos_updated_at  TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
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
SELECT source, shop_id || ':' || order_id, json_extract(document, '$.customer.email'),
       COALESCE(json_extract(document, '$.bill_full_name'),
                json_extract(document, '$.customer.name')),
       NULL, total_price, COALESCE(json_extract(document, '$.currency'), 'VND'), status,
       created_at, updated_at
FROM pc_pos_order
UNION ALL
SELECT source, page_id || ':' || order_id, json_extract(document, '$.customer.email'),
       COALESCE(json_extract(document, '$.bill_full_name'),
                json_extract(document, '$.customer.name')),
       NULL, json_extract(document, '$.total_price'), json_extract(document, '$.currency'),
       json_extract(document, '$.status'), created_at, updated_at
FROM pc_order;
