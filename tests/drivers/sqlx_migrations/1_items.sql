CREATE TABLE sx_items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0);
