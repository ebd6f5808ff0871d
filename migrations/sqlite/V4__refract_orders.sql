-- Seed 001's orders table (Refract checkout messages), with the seed's columns and names, keyed
-- by (source, order_number) instead of order_number alone so that two sources may share an
-- order number. Prices are exact decimals (numeric affinity), not the seed's FLOAT. Columns
-- beyond the seed: what the messages carry (store, sku, size, currency, share_link, mode,
-- checkout_time, image_url, extra labels as JSON) and the last delivery that changed the row.
CREATE TABLE orders (
    id               INTEGER PRIMARY KEY,
    source           TEXT NOT NULL DEFAULT 'refract',
    order_number     VARCHAR(255) NOT NULL,
    product          VARCHAR(255),
    price            DECIMAL,
    total            DECIMAL,
    commission       DECIMAL,
    currency         TEXT,
    quantity         INTEGER DEFAULT 1,
    email            VARCHAR(255),
    customer_name    VARCHAR(255),
    profile          VARCHAR(255),
    proxy_list       VARCHAR(255),
    reference_number VARCHAR(255),
    status           VARCHAR(50),
    tracking_number  VARCHAR(255),
    qty_received     INTEGER DEFAULT 0,
    payment_method   VARCHAR(255),
    shipping_address TEXT,
    shipping_method  VARCHAR(255),
    notes            TEXT,
    order_date       DATETIME,
    order_time       VARCHAR(50),
    posted_date      DATETIME,
    shipped_date     DATETIME,
    delivered_date   DATETIME,
    worksheet_name   VARCHAR(255),
    store            TEXT,
    sku              TEXT,
    size             TEXT,
    share_link       TEXT,
    mode             TEXT,
    checkout_time    TEXT,
    image_url        TEXT,
    extra            TEXT,
    last_delivery_id INTEGER,
    created_at       DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at       DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (source, order_number)
);
CREATE INDEX idx_orders_created_at ON orders (created_at DESC);
CREATE INDEX idx_orders_email ON orders (email);
CREATE INDEX idx_orders_status ON orders (status);

-- Every change to an order: which field, from what to what, and the delivery that carried it.
-- One row per (delivery, field), so applying a delivery twice records its changes once.
-- `order_id` is the seed's (`SELECT * FROM order_events WHERE order_id = 1`), filled in from
-- (source, order_number) by the trigger below.
CREATE TABLE order_events (
    id           INTEGER PRIMARY KEY,
    order_id     INTEGER REFERENCES orders (id),
    source       TEXT NOT NULL,
    order_number TEXT NOT NULL,
    delivery_id  INTEGER NOT NULL,
    field        TEXT NOT NULL,
    old_value    TEXT,
    new_value    TEXT,
    created_at   DATETIME NOT NULL,
    UNIQUE (source, delivery_id, field)
);
CREATE INDEX idx_order_events_order ON order_events (order_id);
CREATE TRIGGER order_events_order_id AFTER INSERT ON order_events
WHEN NEW.order_id IS NULL
BEGIN
    UPDATE order_events
    SET order_id = (SELECT id FROM orders
                    WHERE source = NEW.source AND order_number = NEW.order_number)
    WHERE id = NEW.id;
END;

-- One view of orders across sources, keyed by (source, external_id). Not named `orders`:
-- that is seed 001's table.
CREATE VIEW all_orders AS
SELECT source, cartpanda_id AS external_id, customer_email, customer_name,
       product_name AS product, price AS amount, currency, status, created_at, updated_at
FROM sales
UNION ALL
SELECT source, order_number, email, customer_name, product, COALESCE(total, price), currency,
       status, created_at, updated_at
FROM orders;
