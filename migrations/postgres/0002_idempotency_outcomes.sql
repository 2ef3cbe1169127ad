-- Idempotency-Key records keep the store's outcome of the request (a hold, or
-- a refusal with what the store saw), not an HTTP response: the API renders
-- the answer, the same way the first time and on every replay.
--
-- Not for a rolling upgrade: instances of the previous build still write the
-- dropped columns. Stop them before this migration runs (the next build that
-- starts applies it).
ALTER TABLE idempotency_keys ADD COLUMN outcome JSONB;

-- Records written before: the response body of a hold is the reservation
-- itself; a refusal's problem document carries its items or skus.
UPDATE idempotency_keys SET outcome = CASE
    WHEN status_code = 201 THEN
        jsonb_build_object('outcome', 'held', 'reservation', response_body)
    WHEN response_body->>'type' = '/problems/insufficient-stock' THEN
        jsonb_build_object('outcome', 'insufficient_stock', 'items', response_body->'items')
    WHEN response_body->>'type' = '/problems/unknown-sku' THEN
        jsonb_build_object('outcome', 'unknown_skus', 'skus', response_body->'skus')
END;

-- A claim is written with its outcome in one transaction, so nothing else exists.
DELETE FROM idempotency_keys WHERE outcome IS NULL;

ALTER TABLE idempotency_keys
    ALTER COLUMN outcome SET NOT NULL,
    DROP COLUMN status_code,
    DROP COLUMN response_body;
