-- The totesys OLTP schema as the production database has it (PostgreSQL, managed by Prisma).
-- Used by the simulator; the extraction never runs DDL against a real source.
CREATE TYPE "PaymentTypeName" AS ENUM ('SALES_RECEIPT', 'SALES_REFUND', 'PURCHASE_PAYMENT', 'PURCHASE_REFUND');
CREATE TYPE "TransactionType" AS ENUM ('SALE', 'PURCHASE');

CREATE TABLE _prisma_migrations (
    id varchar(36) PRIMARY KEY,
    checksum varchar(64) NOT NULL,
    finished_at timestamptz,
    migration_name varchar(255) NOT NULL,
    logs text,
    rolled_back_at timestamptz,
    started_at timestamptz NOT NULL DEFAULT now(),
    applied_steps_count integer NOT NULL DEFAULT 0
);

CREATE TABLE address (
    address_id serial PRIMARY KEY,
    address_line_1 text NOT NULL,
    address_line_2 text,
    district text,
    city text NOT NULL,
    postal_code text NOT NULL,
    country text NOT NULL,
    phone text NOT NULL,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE counterparty (
    counterparty_id serial PRIMARY KEY,
    counterparty_legal_name text NOT NULL,
    legal_address_id integer NOT NULL REFERENCES address (address_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    commercial_contact text,
    delivery_contact text,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE currency (
    currency_id serial PRIMARY KEY,
    currency_code varchar(3) NOT NULL,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE department (
    department_id serial PRIMARY KEY,
    department_name text NOT NULL,
    location text,
    manager text,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE design (
    design_id serial PRIMARY KEY,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    design_name text NOT NULL,
    file_location text NOT NULL,
    file_name text NOT NULL,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE payment_type (
    payment_type_id serial PRIMARY KEY,
    payment_type_name "PaymentTypeName" NOT NULL,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE staff (
    staff_id serial PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    department_id integer NOT NULL REFERENCES department (department_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    email_address text NOT NULL,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE purchase_order (
    purchase_order_id serial PRIMARY KEY,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL,
    staff_id integer NOT NULL REFERENCES staff (staff_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    counterparty_id integer NOT NULL REFERENCES counterparty (counterparty_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    item_code text NOT NULL,
    item_quantity integer NOT NULL,
    item_unit_price numeric(10, 2) NOT NULL,
    currency_id integer NOT NULL REFERENCES currency (currency_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    agreed_delivery_date text NOT NULL,
    agreed_payment_date text NOT NULL,
    agreed_delivery_location_id integer NOT NULL REFERENCES address (address_id) ON UPDATE CASCADE ON DELETE RESTRICT
);

CREATE TABLE sales_order (
    sales_order_id serial PRIMARY KEY,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL,
    design_id integer NOT NULL REFERENCES design (design_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    staff_id integer NOT NULL REFERENCES staff (staff_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    counterparty_id integer NOT NULL REFERENCES counterparty (counterparty_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    units_sold integer NOT NULL,
    unit_price numeric(10, 2) NOT NULL,
    currency_id integer NOT NULL REFERENCES currency (currency_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    agreed_delivery_date text NOT NULL,
    agreed_payment_date text NOT NULL,
    agreed_delivery_location_id integer NOT NULL REFERENCES address (address_id) ON UPDATE CASCADE ON DELETE RESTRICT
);

CREATE TABLE transaction (
    transaction_id serial PRIMARY KEY,
    transaction_type "TransactionType" NOT NULL,
    sales_order_id integer UNIQUE REFERENCES sales_order (sales_order_id) ON UPDATE CASCADE ON DELETE SET NULL,
    purchase_order_id integer UNIQUE REFERENCES purchase_order (purchase_order_id) ON UPDATE CASCADE ON DELETE SET NULL,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL
);

CREATE TABLE payment (
    payment_id serial PRIMARY KEY,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated timestamp(3) NOT NULL,
    transaction_id integer NOT NULL UNIQUE REFERENCES transaction (transaction_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    counterparty_id integer NOT NULL REFERENCES counterparty (counterparty_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    payment_amount numeric(10, 2) NOT NULL,
    currency_id integer NOT NULL REFERENCES currency (currency_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    payment_type_id integer NOT NULL REFERENCES payment_type (payment_type_id) ON UPDATE CASCADE ON DELETE RESTRICT,
    paid boolean NOT NULL,
    payment_date text NOT NULL,
    company_ac_number integer NOT NULL,
    counterparty_ac_number integer NOT NULL
);
