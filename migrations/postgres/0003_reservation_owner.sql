-- Reservations belong to the subject of the bearer token that made them: only
-- that subject reads, confirms or cancels one (anyone else gets 404). Holds
-- made before authentication existed have no owner, so nobody can act on them
-- through the API any more; the sweeper still releases them when they expire.
ALTER TABLE reservations ADD COLUMN owner TEXT;

-- Idempotency keys are scoped per subject from now on (the scope names it), so
-- the keys of one client can never replay another's reservation. Records kept
-- under the old shared scope would answer nobody; drop them.
DELETE FROM idempotency_keys WHERE scope = 'POST /v1/reservations';
