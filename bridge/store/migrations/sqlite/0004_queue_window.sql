-- 0004: the oldest pending age counts from when a delivery's window began (its creation, or
-- its last redrive), as max_age does: redriving week-old dead deliveries made the gauge jump to
-- a week. The unfinished deliveries' index holds that time instead of the creation, so that
-- the queue is still read from the index alone.

DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_at, id, window_at)
    WHERE status IN ('pending', 'in_flight');
