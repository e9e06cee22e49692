-- `Idempotency-Key` on `POST /purchase/with-lock/{id}` and `POST /orders`: the first request with
-- a key binds it to an order id (and to what was asked, so a reused key with another request is
-- refused); once answered, the answer is stored and every retry with the key gets it back. Rows
-- are not deleted by the application (see README "Operations" for pruning old keys).
CREATE TABLE idempotency_keys (
    key         text         PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    request     text         NOT NULL,
    order_id    uuid         NOT NULL,
    status      smallint,
    body        text,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    answered_at timestamptz,
    CONSTRAINT idempotency_answer_is_whole CHECK ((status IS NULL) = (body IS NULL))
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
