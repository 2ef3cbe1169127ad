-- Only in pgbench's database: a time-ordered UUID like the service's
-- Uuid::now_v7() (48 bits of milliseconds, then random), so that the
-- reservations primary key grows at its right edge as it does for the service.
CREATE FUNCTION bench_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
            || '7' || substr(md5(random()::text), 1, 19))::uuid
$$;
