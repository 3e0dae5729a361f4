-- Demo production schema: operational data (routes, stops, timings, fares) and customer data.
CREATE TABLE routes (
    route_id integer PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    origin text NOT NULL,
    destination text NOT NULL,
    active boolean NOT NULL DEFAULT true
);

CREATE TABLE stops (
    stop_id integer PRIMARY KEY,
    name text NOT NULL,
    landmark text,
    latitude numeric(9, 6) NOT NULL,
    longitude numeric(9, 6) NOT NULL
);

CREATE TABLE route_stops (
    route_id integer NOT NULL REFERENCES routes,
    stop_sequence integer NOT NULL CHECK (stop_sequence > 0),
    stop_id integer NOT NULL REFERENCES stops,
    scheduled_arrival time NOT NULL,
    scheduled_departure time NOT NULL CHECK (scheduled_departure >= scheduled_arrival),
    PRIMARY KEY (route_id, stop_sequence)
);

CREATE TABLE vehicles (
    vehicle_id integer PRIMARY KEY,
    registration text NOT NULL UNIQUE,
    capacity integer NOT NULL CHECK (capacity > 0),
    operator_name text NOT NULL
);

CREATE TABLE trips (
    trip_id bigint PRIMARY KEY,
    route_id integer NOT NULL REFERENCES routes,
    vehicle_id integer NOT NULL REFERENCES vehicles,
    service_date date NOT NULL,
    departure_time time NOT NULL,
    fare_paise integer NOT NULL CHECK (fare_paise >= 0)
);
CREATE INDEX trips_route_date ON trips (route_id, service_date);

CREATE TABLE customers (
    customer_id bigint PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL UNIQUE,
    phone varchar(16) NOT NULL UNIQUE,
    date_of_birth date,
    home_address text,
    home_latitude numeric(9, 6),
    home_longitude numeric(9, 6),
    created_at timestamptz NOT NULL
);
COMMENT ON COLUMN customers.phone IS 'E.164, +91 mobile';

CREATE TABLE bookings (
    booking_id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers,
    trip_id bigint NOT NULL REFERENCES trips,
    passenger_email text NOT NULL,
    seats smallint NOT NULL CHECK (seats BETWEEN 1 AND 6),
    status text NOT NULL CHECK (status IN ('confirmed', 'cancelled', 'completed')),
    booked_at timestamptz NOT NULL
);
CREATE INDEX bookings_customer ON bookings (customer_id);

CREATE TABLE payments (
    payment_id bigint PRIMARY KEY,
    booking_id bigint NOT NULL REFERENCES bookings,
    amount_paise integer NOT NULL,
    method text NOT NULL CHECK (method IN ('card', 'upi')),
    card_last4 char(4),
    upi_handle text,
    gateway_response jsonb NOT NULL,
    paid_at timestamptz NOT NULL
);

CREATE TABLE support_tickets (
    ticket_id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers,
    subject text NOT NULL,
    body text NOT NULL,
    contact_points text[] NOT NULL DEFAULT '{}',
    callback_number bigint,  -- a legacy column: the customer's mobile as a number
    created_at timestamptz NOT NULL
);
