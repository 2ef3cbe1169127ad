-- One reservation of one unit, as the inventory service runs it with
-- RESERVATION_STRATEGY=guarded and no Idempotency-Key
-- (crates/inventory/src/store/{reservations.rs,strategy.rs,expiry.rs}).
-- Run by scripts/bench.sh: pgbench -n -M prepared -D prefix=… -D skus=… -D ttl=…
--
-- Differences, all needed by pgbench itself: the sku is built from :prefix
-- and a random number; the guarded UPDATE says RETURNING 1 so that pgbench can
-- see whether it touched a row (the service reads the affected-row count);
-- the reservation id comes from bench_uuid_v7() (the service makes a UUIDv7
-- itself) and is RETURNed. With 10^9 units the guard always passes; the
-- other branch is the service's "does not fit" path, for completeness.
\set i random(0, :skus - 1)
\set updated 0
BEGIN;
-- Release due holds on the product (none are due: holds last :ttl seconds).
SELECT r.id FROM reservations r
WHERE r.status = 'held' AND r.expires_at <= now()
  AND EXISTS (SELECT 1 FROM reservation_items i
              WHERE i.reservation_id = r.id AND i.sku = ANY(ARRAY[:prefix::text || :i]))
FOR UPDATE OF r SKIP LOCKED;
SAVEPOINT take_stock;
UPDATE products
SET available = available - 1, reserved = reserved + 1,
    version = version + 1, updated_at = now()
WHERE sku = :prefix::text || :i AND available >= 1
RETURNING 1 AS updated \aset
\if :updated
RELEASE SAVEPOINT take_stock;
INSERT INTO reservations (id, status, expires_at)
VALUES (bench_uuid_v7(), 'held', now() + make_interval(secs => :ttl))
RETURNING id, created_at, expires_at \gset
INSERT INTO reservation_items (reservation_id, sku, quantity)
SELECT :id::uuid, * FROM UNNEST(ARRAY[:prefix::text || :i]::TEXT[], ARRAY[1]::BIGINT[]);
INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
SELECT sku, 'reserved', quantity, :id::uuid FROM UNNEST(ARRAY[:prefix::text || :i]::TEXT[], ARRAY[1]::BIGINT[]) AS l(sku, quantity);
COMMIT;
\else
ROLLBACK TO SAVEPOINT take_stock;
SELECT sku, available, version FROM products WHERE sku = ANY(ARRAY[:prefix::text || :i]) ORDER BY sku;
ROLLBACK;
\endif
