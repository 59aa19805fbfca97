CREATE TABLE orders (
    id           serial PRIMARY KEY,
    customer_id  int NOT NULL REFERENCES customers(id),
    amount_cents int NOT NULL,
    status       text NOT NULL DEFAULT 'new'
);
