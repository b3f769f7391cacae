-- The PostgreSQL store's queries, by name. Times are unix seconds (double precision).

-- The schema's version: the migrations applied, one row each; one replica migrates at a time.

-- name: migration_lock
SELECT pg_advisory_xact_lock(%(key)s);

-- name: versions_found
SELECT to_regclass('schema_version') IS NOT NULL AS found;

-- name: version
SELECT MAX(version) AS v FROM schema_version;

-- name: versions_create
CREATE TABLE IF NOT EXISTS schema_version
    (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL);

-- name: version_applied
INSERT INTO schema_version (version, applied_at) VALUES (%(version)s, %(applied_at)s);

-- name: insert_event
INSERT INTO events (source, event_id, type, received_at, payload)
VALUES (%(source)s, %(event_id)s, %(type)s, %(received_at)s, %(payload)s)
ON CONFLICT (source, event_id) DO NOTHING
RETURNING id;

-- name: insert_new_events
-- Group commit: the new events of several webhooks, their deliveries and remembered purchases,
-- in ONE statement (one round trip, one transaction, one WAL flush). Each input is a column
-- array; deliveries and refs name their event by its position (1-based) in the events' arrays.
-- Events already stored are skipped with their deliveries and refs; of two events that remember
-- the same ref, the later one wins, as if they had come one after the other.
WITH input AS (
    SELECT *
    FROM unnest(%(source)s::text[], %(event_id)s::text[], %(type)s::text[],
                %(received_at)s::double precision[], %(payload)s::text[])
         WITH ORDINALITY AS i (source, event_id, type, received_at, payload, n)
),
stored AS (
    INSERT INTO events (source, event_id, type, received_at, payload)
    SELECT source, event_id, type, received_at, payload FROM input ORDER BY n
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING id, source, event_id
),
new AS (
    SELECT stored.id, input.n FROM stored
    JOIN input ON input.source = stored.source AND input.event_id = stored.event_id
),
queued AS (
    INSERT INTO deliveries (event_pk, route, destination, order_key, status, next_at,
                            created_at, updated_at, window_at)
    SELECT new.id, d.route, d.destination, d.order_key, 'pending', d.now, d.now, d.now, d.now
    FROM unnest(%(d_event)s::bigint[], %(d_route)s::integer[], %(d_destination)s::text[],
                %(d_order_key)s::text[], %(d_now)s::double precision[])
         WITH ORDINALITY AS d (event, route, destination, order_key, now, n)
    JOIN new ON new.n = d.event
    ORDER BY d.n
),
remembered AS (
    INSERT INTO payment_refs (source, ref, txn_id, customer_id, external_id, email, name,
                              created_at)
    SELECT DISTINCT ON (r.source, r.ref)
           r.source, r.ref, r.txn_id, r.customer_id, r.external_id, r.email, r.name, r.now
    FROM unnest(%(r_event)s::bigint[], %(r_source)s::text[], %(r_ref)s::text[],
                %(r_txn_id)s::text[], %(r_customer_id)s::text[], %(r_external_id)s::text[],
                %(r_email)s::text[], %(r_name)s::text[], %(r_now)s::double precision[])
         WITH ORDINALITY AS r (event, source, ref, txn_id, customer_id, external_id, email,
                               name, now, n)
    JOIN new ON new.n = r.event
    ORDER BY r.source, r.ref, r.n DESC
    ON CONFLICT (source, ref) DO UPDATE SET
        txn_id = excluded.txn_id, customer_id = excluded.customer_id,
        external_id = excluded.external_id, email = excluded.email, name = excluded.name,
        created_at = excluded.created_at
),
notified AS MATERIALIZED (
    SELECT pg_notify('bridge_deliveries', %(destinations)s) WHERE EXISTS (SELECT 1 FROM new)
)
SELECT new.n FROM new WHERE (SELECT count(*) FROM notified) >= 0;

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
-- One statement, one round trip: the claim, and what the worker needs to send each delivery.
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
),
claimed AS (
    UPDATE deliveries
    SET status = 'in_flight', claimed_by = %(worker)s, lease_until = %(lease_until)s,
        next_at = %(lease_until)s, updated_at = %(now)s
    FROM due WHERE deliveries.id = due.id
    RETURNING deliveries.*
)
SELECT c.*, e.source, e.event_id, e.type AS event_type, e.payload, e.refund_baseline
FROM claimed c JOIN events e ON e.id = c.event_pk
ORDER BY c.next_at, c.id;

-- name: finish
UPDATE deliveries
SET status = %(status)s, attempts = attempts + %(counted)s, next_at = %(next_at)s,
    last_error = %(error)s, lease_until = NULL, claimed_by = NULL, updated_at = %(now)s
WHERE id = %(id)s AND status = 'in_flight' AND claimed_by = %(worker)s;

-- name: finish_many
-- Group commit of the worker's outcomes: several deliveries' new states and their attempts in
-- ONE statement (each finish as the one above; an attempt is kept only with its finish).
WITH input AS (
    SELECT *
    FROM unnest(%(id)s::bigint[], %(worker)s::text[], %(status)s::text[], %(counted)s::integer[],
                %(next_at)s::double precision[], %(error)s::text[], %(now)s::double precision[])
         AS f (id, worker, status, counted, next_at, error, now)
),
finished AS (
    UPDATE deliveries d
    SET status = f.status, attempts = d.attempts + f.counted, next_at = f.next_at,
        last_error = f.error, lease_until = NULL, claimed_by = NULL, updated_at = f.now
    FROM input f
    WHERE d.id = f.id AND d.status = 'in_flight' AND d.claimed_by = f.worker
    RETURNING d.id
),
recorded AS (
    INSERT INTO attempts (delivery_id, started_at, latency_ms, outcome, status_code, error,
                          response_excerpt)
    SELECT a.delivery_id, a.started_at, a.latency_ms, a.outcome, a.status_code, a.error,
           a.response_excerpt
    FROM unnest(%(a_delivery_id)s::bigint[], %(a_started_at)s::double precision[],
                %(a_latency_ms)s::double precision[], %(a_outcome)s::text[],
                %(a_status_code)s::integer[], %(a_error)s::text[],
                %(a_response_excerpt)s::text[])
         WITH ORDINALITY AS a (delivery_id, started_at, latency_ms, outcome, status_code, error,
                               response_excerpt, n)
    WHERE a.delivery_id IN (SELECT id FROM finished)
    ORDER BY a.n
)
SELECT id FROM finished;

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
       MIN(window_at) FILTER (WHERE status IN ('pending', 'in_flight')) AS oldest,
       COUNT(*) FILTER (WHERE status = 'dead') AS dead
FROM deliveries WHERE status IN ('pending', 'in_flight', 'dead')  -- by index: not every row
GROUP BY destination;
