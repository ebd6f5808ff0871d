-- Issue 11: orders placed at a real venue (OKX) after the signal is committed. The venue's
-- answer is recorded on the order row: `status` moves from 'submitting' to 'accepted' or
-- 'rejected' (paper orders are 'filled' at once), with OKX's `ordId`, `sCode`/`code` and
-- `sMsg`/`msg`. `client_order_id` is OKX's `clOrdId`, the key that keeps a retried
-- placement one order.
ALTER TABLE trading_orders ADD COLUMN client_order_id TEXT;
ALTER TABLE trading_orders ADD COLUMN venue_order_id TEXT;
ALTER TABLE trading_orders ADD COLUMN venue_code TEXT;
ALTER TABLE trading_orders ADD COLUMN venue_message TEXT;
ALTER TABLE trading_orders ADD COLUMN updated_at TIMESTAMPTZ;
CREATE INDEX idx_trading_orders_status ON trading_orders (status);

-- Issue 10: what the application expects a Paystack payment to be (recorded when it
-- initialises the transaction); the buyer's callback is genuine only when Paystack's verified
-- amount and currency are these. No provider report overwrites them.
ALTER TABLE payments ADD COLUMN expected_amount_minor BIGINT;
ALTER TABLE payments ADD COLUMN expected_currency TEXT;
