-- The products of `make bench`, the same in the service's database and in
-- pgbench's: one hot product (hot-0) and 10,000 spread ones (spread-0 …
-- spread-9999), each with 10^9 units so that stock never runs out during a
-- measured run, and each with its `received` ledger row as the API would write.
INSERT INTO products (sku, name, received, available, reserved, sold)
SELECT sku, 'Bench product', 1000000000, 1000000000, 0, 0
FROM (SELECT 'hot-0' AS sku
      UNION ALL
      SELECT 'spread-' || n FROM generate_series(0, 9999) AS n) AS skus;

INSERT INTO stock_ledger (sku, kind, quantity)
SELECT sku, 'received', received FROM products ORDER BY sku;
