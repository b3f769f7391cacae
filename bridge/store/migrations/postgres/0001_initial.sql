-- 0001: events, deliveries, attempts, payment references. Times are unix seconds.

CREATE TABLE IF NOT EXISTS events (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    payload     TEXT NOT NULL,
    UNIQUE (source, event_id)
);

CREATE TABLE IF NOT EXISTS deliveries (
    id          BIGSERIAL PRIMARY KEY,
    event_pk    BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    route       INTEGER NOT NULL,
    destination TEXT NOT NULL,
    order_key   TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION,
    claimed_by  TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    -- when the current retry window opened: at creation, and again at each redrive
    window_at   DOUBLE PRECISION NOT NULL,
    last_error  TEXT,
    UNIQUE (event_pk, destination)
);
-- unfinished deliveries only: what the worker claims, and the per-transaction order; an
-- in-flight delivery's next_at is its lease's end (then it is due again)
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_at, id)
    WHERE status IN ('pending', 'in_flight');
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (destination, order_key, id)
    WHERE status IN ('pending', 'in_flight');
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, updated_at);

CREATE TABLE IF NOT EXISTS attempts (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    started_at       DOUBLE PRECISION NOT NULL,
    latency_ms       DOUBLE PRECISION NOT NULL,
    outcome          TEXT NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id);

-- What the bridge remembers of each sale so that a refund can name its purchase.
CREATE TABLE IF NOT EXISTS payment_refs (
    source      TEXT NOT NULL,
    ref         TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    customer_id TEXT,
    external_id TEXT,
    email       TEXT,
    name        TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (source, ref)
);
