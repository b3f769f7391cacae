-- 0002: cumulative refunds (Polar order.refunded, Lemon Squeezy order_refunded) become deltas:
-- what was already refunded per order, and each such event's baseline.

ALTER TABLE events ADD COLUMN refund_baseline INTEGER;

CREATE TABLE IF NOT EXISTS refund_totals (
    source     TEXT NOT NULL,
    ref        TEXT NOT NULL,
    refunded   INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (source, ref)
);
