-- no-transaction
-- `GET /orders` lists the most recently decided orders: `ORDER BY decided_at DESC, id LIMIT n`.
-- Without this index Postgres sorts the whole table on every call. Built CONCURRENTLY (hence no
-- transaction) so an upgrade does not block the workers' commits on a large table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_decided_at_idx ON orders (decided_at DESC, id);
