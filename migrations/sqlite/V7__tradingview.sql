-- TradingView signals (seed 004). Not named `orders`: that is seed 001's table.
--
-- One row per (source, user): the account the risk rules are decided against. `positions` is
-- JSON text, symbol -> {"quantity", "average_price", "realized_pnl"} as decimal text (exact; the
-- DECIMAL columns below use numeric affinity and are for reading and sorting). `recent` holds
-- the signals of the last minutes for the rate limit, the duplicate window and replays.
CREATE TABLE trading_positions (
    id               INTEGER PRIMARY KEY,
    source           TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    positions        TEXT NOT NULL DEFAULT '{}',
    realized_pnl     DECIMAL NOT NULL DEFAULT 0,
    recent           TEXT NOT NULL DEFAULT '[]',
    signals_count    INTEGER NOT NULL DEFAULT 0,
    orders_count     INTEGER NOT NULL DEFAULT 0,
    last_delivery_id INTEGER,
    created_at       DATETIME NOT NULL,
    updated_at       DATETIME NOT NULL,
    UNIQUE (source, user_id)
);

-- Every signal and what the rules decided: status 'accepted' or 'rejected' with its reason.
CREATE TABLE trading_signals (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    delivery_id INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    action      TEXT NOT NULL,
    price       DECIMAL NOT NULL,
    quantity    DECIMAL,
    strategy    TEXT,
    status      TEXT NOT NULL,
    reason      TEXT,
    received_at DATETIME NOT NULL,
    created_at  DATETIME NOT NULL,
    UNIQUE (source, delivery_id)
);
CREATE INDEX idx_trading_signals_user ON trading_signals (source, user_id, received_at);

-- The order an accepted signal placed; `broker` is 'paper' for the built-in paper broker.
CREATE TABLE trading_orders (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    delivery_id INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    side        TEXT NOT NULL,
    quantity    DECIMAL NOT NULL,
    price       DECIMAL NOT NULL,
    notional    DECIMAL NOT NULL,
    broker      TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  DATETIME NOT NULL,
    UNIQUE (source, delivery_id)
);
CREATE INDEX idx_trading_orders_user ON trading_orders (source, user_id, created_at);

-- A fill, with the realised P&L it made and the position (quantity, average price) it left.
CREATE TABLE trading_fills (
    id                  INTEGER PRIMARY KEY,
    source              TEXT NOT NULL,
    delivery_id         INTEGER NOT NULL,
    user_id             TEXT NOT NULL,
    symbol              TEXT NOT NULL,
    side                TEXT NOT NULL,
    quantity            DECIMAL NOT NULL,
    price               DECIMAL NOT NULL,
    realized_pnl        DECIMAL NOT NULL,
    position_after      DECIMAL NOT NULL,
    average_price_after DECIMAL NOT NULL,
    created_at          DATETIME NOT NULL,
    UNIQUE (source, delivery_id)
);
CREATE INDEX idx_trading_fills_user ON trading_fills (source, user_id, symbol, created_at);
