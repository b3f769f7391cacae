-- 0002: cumulative refunds (Polar order.refunded, Lemon Squeezy order_refunded) become deltas:
-- what was already refunded per order, and each such event's baseline.

ALTER TABLE events ADD COLUMN IF NOT EXISTS refund_baseline BIGINT;

CREATE TABLE IF NOT EXISTS refund_totals (
    source     TEXT NOT NULL,
    ref        TEXT NOT NULL,
    refunded   BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (source, ref)
);
