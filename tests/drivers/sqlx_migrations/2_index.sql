CREATE INDEX sx_items_name ON sx_items (name);
