-- One reservation of one unit, as the inventory service runs it with
-- RESERVATION_STRATEGY=optimistic and no Idempotency-Key
-- (crates/inventory/src/store/{reservations.rs,strategy.rs,expiry.rs}).
-- Run by scripts/bench.sh: pgbench -n -M prepared -D prefix=… -D skus=… -D ttl=…
--
-- Differences, all needed by pgbench itself: the sku is built from :prefix
-- and a random number; the UPDATE says RETURNING 1 so that pgbench can see
-- whether it touched a row (the service reads the affected-row count); the
-- reservation id comes from bench_uuid_v7() (the service makes a UUIDv7 itself)
-- and is RETURNed. A lost compare-and-set rolls back and ends this
-- transaction; pgbench starts the next one at once (the service retries the
-- same request after a jittered backoff).
\set i random(0, :skus - 1)
\set updated 0
BEGIN;
-- Release due holds on the product (none are due: holds last :ttl seconds).
SELECT r.id FROM reservations r
WHERE r.status = 'held' AND r.expires_at <= now()
  AND EXISTS (SELECT 1 FROM reservation_items i
              WHERE i.reservation_id = r.id AND i.sku = ANY(ARRAY[:prefix::text || :i]))
FOR UPDATE OF r SKIP LOCKED;
SELECT sku, available, version FROM products WHERE sku = ANY(ARRAY[:prefix::text || :i]) ORDER BY sku \gset
UPDATE products
SET available = available - 1, reserved = reserved + 1,
    version = version + 1, updated_at = now()
WHERE sku = :sku AND version = :version
RETURNING 1 AS updated \aset
\if :updated
INSERT INTO reservations (id, status, expires_at)
VALUES (bench_uuid_v7(), 'held', now() + make_interval(secs => :ttl))
RETURNING id, created_at, expires_at \gset
INSERT INTO reservation_items (reservation_id, sku, quantity)
SELECT :id::uuid, * FROM UNNEST(ARRAY[:sku]::TEXT[], ARRAY[1]::BIGINT[]);
INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
SELECT sku, 'reserved', quantity, :id::uuid FROM UNNEST(ARRAY[:sku]::TEXT[], ARRAY[1]::BIGINT[]) AS l(sku, quantity);
COMMIT;
\else
ROLLBACK;
\endif
