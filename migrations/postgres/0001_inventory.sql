-- Stock per product. The counters always balance against what was received,
-- and none may go negative: the database itself refuses an oversell.
CREATE TABLE products (
    -- Byte order (COLLATE "C"), whatever the database's default collation: the
    -- service sorts skus the same way to lock rows in one global order.
    sku        TEXT COLLATE "C" PRIMARY KEY CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    name       TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    received   BIGINT NOT NULL CHECK (received >= 0),
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    sold       BIGINT NOT NULL CHECK (sold >= 0),
    -- Optimistic-locking version, bumped by every change; also the ETag.
    version    BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT stock_balances CHECK (available + reserved + sold = received)
);

CREATE TABLE reservations (
    id         UUID PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The sweeper's work list: only holds, ordered by expiry.
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_items (
    reservation_id UUID NOT NULL REFERENCES reservations (id),
    sku            TEXT COLLATE "C" NOT NULL REFERENCES products (sku),
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, sku)
);

CREATE INDEX reservation_items_by_sku ON reservation_items (sku);

-- Every stock movement, appended in the transaction that makes it. Replaying a
-- product's ledger gives its current counters.
CREATE TABLE stock_ledger (
    id             BIGSERIAL PRIMARY KEY,
    sku            TEXT COLLATE "C" NOT NULL REFERENCES products (sku),
    kind           TEXT NOT NULL CHECK (kind IN ('received', 'reserved', 'released', 'expired', 'sold', 'adjusted')),
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    reservation_id UUID REFERENCES reservations (id),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX stock_ledger_by_sku ON stock_ledger (sku, id DESC);

-- Idempotency-Key records: the request a key was first used with and the
-- response it produced, replayed for retries of the same request.
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request       JSONB NOT NULL,
    status_code   SMALLINT NOT NULL,
    response_body JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
