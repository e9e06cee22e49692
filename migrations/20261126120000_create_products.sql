-- Products and their stock. `last_fence` is the highest fencing token that has claimed the row:
-- a lock holder raises it before reading the stock, and its commit applies only while the row
-- still carries its token (see src/store/). There is deliberately NO `CHECK (stock >= 0)`: the
-- unsafe `--no-lock` demo must be able to oversell; the fenced path keeps stock >= 0 in its SQL.
CREATE TABLE products (
    id          integer        PRIMARY KEY,
    name        text           NOT NULL,
    stock       integer        NOT NULL,
    price       numeric(10, 2) NOT NULL,
    last_fence  bigint         NOT NULL DEFAULT 0,
    updated_at  timestamptz
);

-- The seed's three products; idempotent so a re-run never duplicates or resets them.
INSERT INTO products (id, name, stock, price) VALUES
    (1, 'iPhone 15',   10,  999.00),
    (2, 'MacBook Pro',  5, 2499.00),
    (3, 'AirPods Pro', 20,  249.00)
ON CONFLICT (id) DO NOTHING;
