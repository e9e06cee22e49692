-- One row per decided order: exactly one outcome per order id (the primary key makes a second
-- decision impossible). `product_id` and `quantity` are nullable because a poison message with a
-- valid id but a garbage product or quantity still gets its `rejected` row. No foreign key to
-- products: an order for an unknown product is recorded as `rejected` / `unknown_product`.
CREATE TABLE orders (
    id          uuid         PRIMARY KEY,
    product_id  integer,
    quantity    integer,
    status      text         NOT NULL CHECK (status IN ('fulfilled', 'rejected')),
    reason      text,
    fence       bigint,
    worker      text,
    attempts    integer,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    decided_at  timestamptz  NOT NULL DEFAULT now(),
    -- A fulfilled order has no reason and names what it sold; a rejected one always says why.
    CONSTRAINT orders_reason_matches_status CHECK ((status = 'fulfilled') = (reason IS NULL)),
    CONSTRAINT orders_fulfilled_is_complete CHECK (
        status <> 'fulfilled' OR (product_id IS NOT NULL AND quantity IS NOT NULL AND quantity > 0)
    )
);

CREATE INDEX orders_product_id_idx ON orders (product_id);
