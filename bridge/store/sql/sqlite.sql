-- The SQLite store's queries, by name. Times are unix seconds (REAL).

-- name: pragmas
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;

-- name: schema
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    received_at REAL NOT NULL,
    payload     TEXT NOT NULL,
    UNIQUE (source, event_id)
);

CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    event_pk    INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    route       INTEGER NOT NULL,
    destination TEXT NOT NULL,
    order_key   TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL,
    lease_until REAL,
    claimed_by  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    -- when the current retry window opened: at creation, and again at each redrive
    window_at   REAL NOT NULL,
    last_error  TEXT,
    UNIQUE (event_pk, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (destination, order_key, id);
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, updated_at);

CREATE TABLE IF NOT EXISTS attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    started_at       REAL NOT NULL,
    latency_ms       REAL NOT NULL,
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
    created_at  REAL NOT NULL,
    PRIMARY KEY (source, ref)
);

-- name: insert_event
INSERT INTO events (source, event_id, type, received_at, payload)
VALUES (:source, :event_id, :type, :received_at, :payload)
ON CONFLICT (source, event_id) DO NOTHING
RETURNING id;

-- name: insert_delivery
INSERT INTO deliveries (event_pk, route, destination, order_key, status, next_at, created_at,
                        updated_at, window_at)
VALUES (:event_pk, :route, :destination, :order_key, 'pending', :now, :now, :now, :now);

-- name: remember_ref
INSERT INTO payment_refs (source, ref, txn_id, customer_id, external_id, email, name, created_at)
VALUES (:source, :ref, :txn_id, :customer_id, :external_id, :email, :name, :now)
ON CONFLICT (source, ref) DO UPDATE SET
    txn_id = excluded.txn_id, customer_id = excluded.customer_id,
    external_id = excluded.external_id, email = excluded.email, name = excluded.name,
    created_at = excluded.created_at;

-- name: find_ref
SELECT txn_id, customer_id, external_id, email, name
FROM payment_refs WHERE source = :source AND ref = :ref;

-- name: claim
UPDATE deliveries
SET status = 'in_flight', claimed_by = :worker, lease_until = :lease_until, updated_at = :now
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.destination = :destination
      AND ((d.status = 'pending' AND d.next_at <= :now)
           OR (d.status = 'in_flight' AND d.lease_until <= :now))
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.destination = d.destination AND e.order_key = d.order_key
            AND e.id < d.id AND e.status IN ('pending', 'in_flight'))
    ORDER BY d.next_at, d.id
    LIMIT :limit)
RETURNING id;

-- name: select_claimed
SELECT d.*, e.source, e.event_id, e.type AS event_type, e.payload
FROM deliveries d JOIN events e ON e.id = d.event_pk
WHERE d.id IN (SELECT value FROM json_each(:ids))
ORDER BY d.next_at, d.id;

-- name: finish
UPDATE deliveries
SET status = :status, attempts = attempts + :counted, next_at = :next_at, last_error = :error,
    lease_until = NULL, claimed_by = NULL, updated_at = :now
WHERE id = :id AND status = 'in_flight' AND claimed_by = :worker;

-- name: insert_attempt
INSERT INTO attempts (delivery_id, started_at, latency_ms, outcome, status_code, error, response_excerpt)
VALUES (:delivery_id, :started_at, :latency_ms, :outcome, :status_code, :error, :response_excerpt);

-- name: release
UPDATE deliveries SET status = 'pending', lease_until = NULL, claimed_by = NULL, updated_at = :now
WHERE status = 'in_flight' AND (claimed_by = :worker OR :all_workers);

-- name: next_due
SELECT MIN(CASE WHEN status = 'pending' THEN next_at ELSE lease_until END)
FROM deliveries WHERE status IN ('pending', 'in_flight');

-- name: get_delivery
SELECT d.*, e.source, e.event_id, e.type AS event_type, e.payload
FROM deliveries d JOIN events e ON e.id = d.event_pk WHERE d.id = :id;

-- name: list_attempts
SELECT * FROM attempts WHERE delivery_id = :id ORDER BY id;

-- name: list_deliveries
SELECT d.*, e.source, e.event_id, e.type AS event_type, NULL AS payload
FROM deliveries d JOIN events e ON e.id = d.event_pk
WHERE (:status IS NULL OR d.status = :status)
  AND (:destination IS NULL OR d.destination = :destination)
  AND (:since IS NULL OR d.updated_at >= :since)
ORDER BY d.id DESC
LIMIT :limit;

-- name: redrive
UPDATE deliveries
SET status = 'pending', next_at = :now, attempts = 0, lease_until = NULL, claimed_by = NULL,
    updated_at = :now, window_at = :now
WHERE id = :id AND status NOT IN ('pending', 'in_flight');

-- name: count_by_status
SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status;

-- name: list_events
SELECT e.id, e.source, e.event_id, e.type, e.received_at,
       (SELECT json_group_object(status, n) FROM
           (SELECT status, COUNT(*) AS n FROM deliveries d WHERE d.event_pk = e.id GROUP BY status)
       ) AS deliveries
FROM events e ORDER BY e.id DESC LIMIT :limit;

-- name: prune_events
DELETE FROM events
WHERE received_at < :before
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_pk = events.id
                  AND d.status NOT IN ('delivered', 'dry_run', 'skipped'));

-- name: prune_refs
DELETE FROM payment_refs WHERE created_at < :before;
