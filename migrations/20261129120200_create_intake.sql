-- Durable intake: every order a producer (or `POST /orders`) reports as enqueued is recorded here
-- before it is pushed to the Redis list, so an order survives Redis losing its data. A row whose
-- order has no outcome in `orders` and is in no Redis list of the queue is pushed again by the
-- workers' recovery sweep (orders are idempotent by id, so a duplicate costs nothing but work).
-- Rows whose order is decided are pruned by the sweep. No foreign key to `orders` (written
-- first) nor to `products` (unknown products are rejected by the workers, with an outcome).
CREATE TABLE intake (
    id           uuid         PRIMARY KEY,
    product_id   integer      NOT NULL,
    quantity     integer      NOT NULL CHECK (quantity > 0),
    -- The pending list the order was pushed to: a worker's sweep restores only its own queue's
    -- orders (several queues may share one database).
    queue        text         NOT NULL,
    enqueued_at  timestamptz  NOT NULL DEFAULT now()
);

-- The sweep reads its queue's oldest undecided rows first.
CREATE INDEX intake_queue_enqueued_at_idx ON intake (queue, enqueued_at);
