-- `GET /orders` lists the most recently decided orders: `ORDER BY decided_at DESC, id LIMIT n`.
-- Without this index Postgres sorts the whole table on every call. Not CONCURRENTLY: that cannot
-- run in the migration's transaction, and it deadlocks with other processes waiting on the
-- migrator's advisory lock. On a large table, create it by hand first with
-- `CREATE INDEX CONCURRENTLY orders_decided_at_idx ON orders (decided_at DESC, id)`; this is then
-- a no-op.
CREATE INDEX IF NOT EXISTS orders_decided_at_idx ON orders (decided_at DESC, id);
