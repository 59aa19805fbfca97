-- Example migrations, applied to every tenant (schema, database) by
-- `pgtenant tenant create` and by `pgtenant demo`.
CREATE TABLE customers (
    id    serial PRIMARY KEY,
    name  text NOT NULL,
    email text
);
