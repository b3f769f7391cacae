-- The SQLite store's queries, by name. Times are unix seconds (REAL).

-- name: pragmas
-- temp_store: a statement's journal (a multi-row INSERT into pages the transaction already
-- changed keeps one) and a query's sorting stay in memory: left to files, nearly every ingest
-- batch created and unlinked one in /var/tmp, and a container whose only writable place is
-- the database's volume could not have stored such a batch at all
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA temp_store = MEMORY;

-- The schema's version: the migrations applied, one row each.

-- name: versions_found
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version';

-- name: version
SELECT MAX(version) FROM schema_version;

-- name: versions_create
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);

-- name: versions_columns
PRAGMA table_info(schema_version);

-- name: versions_add_applied_at
-- the first bridges' table, from before versioned migrations, holds the version alone
ALTER TABLE schema_version ADD COLUMN applied_at REAL NOT NULL DEFAULT 0;

-- name: version_applied
INSERT INTO schema_version (version, applied_at) VALUES (?, ?);

-- Events, deliveries and remembered purchases are written by multi-row statements: the store
-- repeats each VALUES row once per row (the events of one commit that need nothing looked
-- up, most of them, take three statements whatever their number).

-- name: insert_events
WITH new (source, event_id, type, received_at, payload) AS (VALUES (?, ?, ?, ?, ?))
INSERT INTO events (source, event_id, type, received_at, payload)
SELECT * FROM new WHERE true
ON CONFLICT (source, event_id) DO NOTHING
RETURNING id, source, event_id;

-- name: insert_deliveries
WITH new (event_pk, route, destination, order_key, now) AS (VALUES (?, ?, ?, ?, ?))
INSERT INTO deliveries (event_pk, route, destination, order_key, status, next_at, created_at,
                        updated_at, window_at)
SELECT event_pk, route, destination, order_key, 'pending', now, now, now, now FROM new;

-- name: remember_refs
WITH new (source, ref, txn_id, customer_id, external_id, email, name, now)
    AS (VALUES (?, ?, ?, ?, ?, ?, ?, ?))
INSERT INTO payment_refs (source, ref, txn_id, customer_id, external_id, email, name, created_at)
SELECT * FROM new WHERE true
ON CONFLICT (source, ref) DO UPDATE SET
    txn_id = excluded.txn_id, customer_id = excluded.customer_id,
    external_id = excluded.external_id, email = excluded.email, name = excluded.name,
    created_at = excluded.created_at;

-- name: refund_total
SELECT refunded FROM refund_totals WHERE source = :source AND ref = :ref;

-- name: set_refund_total
INSERT INTO refund_totals (source, ref, refunded, updated_at)
VALUES (:source, :ref, :refunded, :now)
ON CONFLICT (source, ref) DO UPDATE SET
    refunded = MAX(refund_totals.refunded, excluded.refunded), updated_at = excluded.updated_at;

-- name: set_baseline
UPDATE events SET refund_baseline = :baseline WHERE id = :id;

-- name: find_ref
SELECT txn_id, customer_id, external_id, email, name
FROM payment_refs WHERE source = :source AND ref = :ref;

-- name: claim
UPDATE deliveries
SET status = 'in_flight', claimed_by = :worker, lease_until = :lease_until,
    next_at = :lease_until, updated_at = :now
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.destination = :destination
      AND d.status IN ('pending', 'in_flight') AND d.next_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.destination = d.destination AND e.order_key = d.order_key
            AND e.id < d.id AND e.status IN ('pending', 'in_flight'))
    ORDER BY d.next_at, d.id
    LIMIT :limit)
RETURNING id;

-- name: select_claimed
SELECT d.*, e.source, e.event_id, e.type AS event_type, e.payload, e.refund_baseline
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
UPDATE deliveries
SET status = 'pending', lease_until = NULL, claimed_by = NULL, next_at = :now, updated_at = :now
WHERE status = 'in_flight'
  AND (:all_workers OR claimed_by = :worker OR substr(claimed_by, 1, length(:worker) + 1) = :worker || '/');

-- name: next_due
-- one destination's earliest due time: a seek in deliveries_due, however long the queue is
SELECT MIN(next_at) FROM deliveries
WHERE destination = :destination AND status IN ('pending', 'in_flight');

-- name: get_delivery
SELECT d.*, e.source, e.event_id, e.type AS event_type, e.payload, e.refund_baseline
FROM deliveries d JOIN events e ON e.id = d.event_pk WHERE d.id = :id;

-- name: list_attempts
SELECT * FROM attempts WHERE delivery_id = :id ORDER BY id;

-- name: list_deliveries
SELECT d.*, e.source, e.event_id, e.type AS event_type, NULL AS payload, e.refund_baseline
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

-- name: prune_refund_totals
DELETE FROM refund_totals WHERE updated_at < :before;

-- name: queue
-- the unfinished from deliveries_due alone (it holds window_at: the creation or the last
-- redrive), the dead by deliveries_status
SELECT destination, SUM(depth) AS depth, MIN(oldest) AS oldest, SUM(dead) AS dead
FROM (
    SELECT destination, COUNT(*) AS depth, MIN(window_at) AS oldest, 0 AS dead
    FROM deliveries INDEXED BY deliveries_due
    WHERE status IN ('pending', 'in_flight')
    GROUP BY destination
    UNION ALL
    SELECT destination, 0, NULL, COUNT(*) FROM deliveries WHERE status = 'dead'
    GROUP BY destination
)
GROUP BY destination;
