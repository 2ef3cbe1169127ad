-- The single-statement ceiling of `make bench`: the least work that takes one
-- unit of a product, the guarded UPDATE alone, in autocommit (no BEGIN: each
-- statement is its own transaction), no reservation, ledger or idempotency rows.
-- Nothing the service does per unit can be cheaper on one row lock, so on a hot
-- product this is what the database allows one unit at a time (coalescing takes
-- several units per lock and may pass it).
-- Run by scripts/bench.sh: pgbench -n -M prepared -D prefix=… -D skus=…
-- With 10^9 units per product the guard always passes.
\set i random(0, :skus - 1)
UPDATE products SET available = available - 1, reserved = reserved + 1, version = version + 1
WHERE sku = :prefix::text || :i AND available >= 1;
