-- The PostgreSQL store's queries, by name. Times are unix seconds (double precision).

-- name: insert_event
INSERT INTO events (source, event_id, type, received_at, payload)
VALUES (%(source)s, %(event_id)s, %(type)s, %(received_at)s, %(payload)s)
ON CONFLICT (source, event_id) DO NOTHING
RETURNING id;

-- name: insert_delivery
INSERT INTO deliveries (event_pk, route, destination, order_key, status, next_at, created_at,
                        updated_at, window_at)
VALUES (%(event_pk)s, %(route)s, %(destination)s, %(order_key)s, 'pending', %(now)s, %(now)s,
        %(now)s, %(now)s);

-- name: notify
SELECT pg_notify('bridge_deliveries', %(destinations)s);

-- name: remember_ref
INSERT INTO payment_refs (source, ref, txn_id, customer_id, external_id, email, name, created_at)
VALUES (%(source)s, %(ref)s, %(txn_id)s, %(customer_id)s, %(external_id)s, %(email)s, %(name)s, %(now)s)
ON CONFLICT (source, ref) DO UPDATE SET
    txn_id = excluded.txn_id, customer_id = excluded.customer_id,
    external_id = excluded.external_id, email = excluded.email, name = excluded.name,
    created_at = excluded.created_at;

-- name: refund_total_row
INSERT INTO refund_totals (source, ref, refunded, updated_at)
VALUES (%(source)s, %(ref)s, 0, %(now)s)
ON CONFLICT (source, ref) DO NOTHING;

-- name: refund_total
SELECT refunded FROM refund_totals WHERE source = %(source)s AND ref = %(ref)s FOR UPDATE;

-- name: set_refund_total
INSERT INTO refund_totals (source, ref, refunded, updated_at)
VALUES (%(source)s, %(ref)s, %(refunded)s, %(now)s)
ON CONFLICT (source, ref) DO UPDATE SET
    refunded = GREATEST(refund_totals.refunded, excluded.refunded), updated_at = excluded.updated_at;

-- name: set_baseline
UPDATE events SET refund_baseline = %(baseline)s WHERE id = %(id)s;

-- name: find_ref
SELECT txn_id, customer_id, external_id, email, name
FROM payment_refs WHERE source = %(source)s AND ref = %(ref)s;

-- name: claim
WITH due AS (
    SELECT d.id FROM deliveries d
    WHERE d.destination = %(destination)s
      AND d.status IN ('pending', 'in_flight') AND d.next_at <= %(now)s
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.destination = d.destination AND e.order_key = d.order_key
            AND e.id < d.id AND e.status IN ('pending', 'in_flight'))
    ORDER BY d.next_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries
SET status = 'in_flight', claimed_by = %(worker)s, lease_until = %(lease_until)s,
    next_at = %(lease_until)s, updated_at = %(now)s
FROM due WHERE deliveries.id = due.id
RETURNING deliveries.id;

-- name: select_claimed
SELECT d.*, e.source, e.event_id, e.type AS event_type, e.payload, e.refund_baseline
FROM deliveries d JOIN events e ON e.id = d.event_pk
WHERE d.id = ANY(%(ids)s)
ORDER BY d.next_at, d.id;

-- name: finish
UPDATE deliveries
SET status = %(status)s, attempts = attempts + %(counted)s, next_at = %(next_at)s,
    last_error = %(error)s, lease_until = NULL, claimed_by = NULL, updated_at = %(now)s
WHERE id = %(id)s AND status = 'in_flight' AND claimed_by = %(worker)s;

-- name: insert_attempt
INSERT INTO attempts (delivery_id, started_at, latency_ms, outcome, status_code, error, response_excerpt)
VALUES (%(delivery_id)s, %(started_at)s, %(latency_ms)s, %(outcome)s, %(status_code)s, %(error)s,
        %(response_excerpt)s);

-- name: release
UPDATE deliveries
SET status = 'pending', lease_until = NULL, claimed_by = NULL, next_at = %(now)s,
    updated_at = %(now)s
WHERE status = 'in_flight'
  AND (%(all_workers)s OR claimed_by = %(worker)s OR starts_with(claimed_by, %(worker)s || '/'));

-- name: next_due
-- each destination's earliest due time is a seek in deliveries_due, however long the queue is
SELECT MIN(due.next_at) AS min
FROM unnest(%(destinations)s::text[]) AS names (destination)
CROSS JOIN LATERAL (
    SELECT MIN(d.next_at) AS next_at FROM deliveries d
    WHERE d.destination = names.destination AND d.status IN ('pending', 'in_flight')
) AS due;

-- name: get_delivery
SELECT d.*, e.source, e.event_id, e.type AS event_type, e.payload, e.refund_baseline
FROM deliveries d JOIN events e ON e.id = d.event_pk WHERE d.id = %(id)s;

-- name: list_attempts
SELECT * FROM attempts WHERE delivery_id = %(id)s ORDER BY id;

-- name: list_deliveries
SELECT d.*, e.source, e.event_id, e.type AS event_type, NULL AS payload, e.refund_baseline
FROM deliveries d JOIN events e ON e.id = d.event_pk
WHERE (%(status)s::text IS NULL OR d.status = %(status)s)
  AND (%(destination)s::text IS NULL OR d.destination = %(destination)s)
  AND (%(since)s::double precision IS NULL OR d.updated_at >= %(since)s)
ORDER BY d.id DESC
LIMIT %(limit)s;

-- name: redrive
UPDATE deliveries
SET status = 'pending', next_at = %(now)s, attempts = 0, lease_until = NULL, claimed_by = NULL,
    updated_at = %(now)s, window_at = %(now)s
WHERE id = ANY(%(ids)s) AND status NOT IN ('pending', 'in_flight')
RETURNING id;

-- name: count_by_status
SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status;

-- name: list_events
SELECT e.id, e.source, e.event_id, e.type, e.received_at,
       (SELECT COALESCE(json_object_agg(status, n), '{}'::json)::text FROM
           (SELECT status, COUNT(*) AS n FROM deliveries d WHERE d.event_pk = e.id GROUP BY status) s
       ) AS deliveries
FROM events e ORDER BY e.id DESC LIMIT %(limit)s;

-- name: prune_events
DELETE FROM events
WHERE received_at < %(before)s
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_pk = events.id
                  AND d.status NOT IN ('delivered', 'dry_run', 'skipped'));

-- name: prune_refs
DELETE FROM payment_refs WHERE created_at < %(before)s;

-- name: prune_refund_totals
DELETE FROM refund_totals WHERE updated_at < %(before)s;

-- name: queue
SELECT destination, COUNT(*) FILTER (WHERE status IN ('pending', 'in_flight')) AS depth,
       MIN(created_at) FILTER (WHERE status IN ('pending', 'in_flight')) AS oldest,
       COUNT(*) FILTER (WHERE status = 'dead') AS dead
FROM deliveries WHERE status IN ('pending', 'in_flight', 'dead')  -- by index: not every row
GROUP BY destination;
