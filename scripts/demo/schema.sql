-- The demo schema: a shop with customers and orders, owned by the cdc role so that cdcd may create
-- its publication for these tables.
CREATE TABLE IF NOT EXISTS public.customers (
	id      bigint PRIMARY KEY,
	name    text NOT NULL,
	email   text,
	created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.orders (
	id          bigint PRIMARY KEY,
	customer_id bigint NOT NULL REFERENCES public.customers (id),
	amount      numeric(12, 2) NOT NULL,
	status      text NOT NULL DEFAULT 'new',
	placed      timestamptz NOT NULL DEFAULT now()
);
