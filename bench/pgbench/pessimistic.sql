-- One reservation of one unit, as the inventory service runs it with
-- RESERVATION_STRATEGY=pessimistic and no Idempotency-Key
-- (crates/inventory/src/store/{reservations.rs,strategy.rs,expiry.rs}).
-- Run by scripts/bench.sh: pgbench -n -M prepared -D prefix=… -D skus=… -D ttl=…
--
-- Differences, all needed by pgbench itself: the sku is built from :prefix
-- and a random number; the reservation id comes from bench_uuid_v7() (the
-- service makes a UUIDv7 itself). The row lock makes
-- concurrent reservations queue, so nothing is conditional here: the stock
-- check passes (10^9 units) and the UPDATE always touches its row.
\set i random(0, :skus - 1)
-- Any due holds on the product? (none are: holds last :ttl seconds; when
-- there are, the service releases them in a transaction of its own first)
SELECT EXISTS (
  SELECT 1 FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
  WHERE r.status = 'held' AND r.expires_at <= now() AND i.sku = ANY(ARRAY[:prefix::text || :i])
) AS due;
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT sku, available, version FROM products WHERE sku = ANY(ARRAY[:prefix::text || :i]) ORDER BY sku FOR UPDATE \gset
UPDATE products p
SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
    version = p.version + 1, updated_at = now()
FROM UNNEST(ARRAY[:sku]::TEXT[], ARRAY[1]::BIGINT[]) AS l(sku, quantity)
WHERE p.sku = l.sku;
WITH hold AS (
    INSERT INTO reservations (id, status, expires_at)
    VALUES (bench_uuid_v7(), 'held', now() + make_interval(secs => :ttl))
    RETURNING id, created_at, expires_at
), lines AS (
    INSERT INTO reservation_items (reservation_id, sku, quantity)
    SELECT hold.id, l.sku, l.quantity
    FROM hold, UNNEST(ARRAY[:prefix::text || :i]::TEXT[], ARRAY[1]::BIGINT[]) AS l(sku, quantity)
), ledger AS (
    INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
    SELECT l.sku, 'reserved', l.quantity, hold.id
    FROM hold, UNNEST(ARRAY[:prefix::text || :i]::TEXT[], ARRAY[1]::BIGINT[]) AS l(sku, quantity)
)
SELECT created_at, expires_at FROM hold;
COMMIT;
