-- A small shop's day, in separate transactions.
INSERT INTO customers (id, name, email) VALUES (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Alan Turing', NULL);
BEGIN;
INSERT INTO orders (id, customer_id, amount) VALUES (100, 1, 12.50), (101, 2, 99.99);
UPDATE customers SET email = 'alan@example.com' WHERE id = 2;
COMMIT;
UPDATE orders SET status = 'shipped' WHERE id = 100;
BEGIN;
DELETE FROM orders WHERE id = 101;
UPDATE customers SET id = 3 WHERE id = 2;
COMMIT;
