"""Generates and loads the demo production database: deterministic, COPY-loaded, scalable."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources

import psycopg
from psycopg import sql

from refresh_pipeline.demo.check_digits import luhn_check_digit, verhoeff_check_digit
from refresh_pipeline.errors import RefreshError

SEED = 20261129
CUSTOMERS_AT_SCALE_1 = 200_000
DEFAULT_SCALE = 0.01

_FIRST = [
    "Aarti",
    "Abhishek",
    "Anil",
    "Anjali",
    "Deepak",
    "Farida",
    "Ganesh",
    "Hema",
    "Imran",
    "Jyoti",
    "Kunal",
    "Lata",
    "Mahesh",
    "Nandini",
    "Prakash",
    "Rekha",
    "Sandeep",
    "Sunita",
    "Vikram",
    "Yogita",
]
_LAST = [
    "Agarwal",
    "Banerjee",
    "Chavan",
    "D'Souza",
    "Gaikwad",
    "Hegde",
    "Kadam",
    "Mehta",
    "Naik",
    "Parab",
    "Qureshi",
    "Rane",
    "Sawant",
    "Shetty",
    "Tiwari",
    "Wagh",
]
_DOMAINS = ["gmail.com", "yahoo.co.in", "outlook.com", "rediffmail.com", "cityflo-customers.in"]
_BANKS = ["okicici", "oksbi", "ybl", "paytm", "okaxis"]
_AREAS = [
    "Andheri",
    "Bandra",
    "Powai",
    "Thane",
    "Vashi",
    "Borivali",
    "Dadar",
    "Chembur",
    "Goregaon",
    "Lower Parel",
    "BKC",
    "Malad",
    "Kurla",
    "Mulund",
    "Ghatkopar",
    "Worli",
]
_STREETS = ["Hill Road", "Link Road", "Station Road", "SV Road", "LBS Marg", "Ghodbunder Road"]


@dataclass(frozen=True)
class DemoSize:
    customers: int
    routes: int
    stops: int
    vehicles: int
    trips: int
    bookings: int
    payments: int
    tickets: int

    @classmethod
    def at_scale(cls, scale: float) -> DemoSize:
        if scale <= 0:
            raise RefreshError(f"demo scale must be positive, got {scale}")
        customers = max(50, int(CUSTOMERS_AT_SCALE_1 * scale))
        return cls(
            customers=customers,
            routes=max(5, min(120, int(400 * scale**0.5))),
            stops=max(20, min(900, int(3000 * scale**0.5))),
            vehicles=max(5, min(400, int(1200 * scale**0.5))),
            trips=max(100, int(150_000 * scale)),
            bookings=customers * 5,
            payments=customers * 5,
            tickets=max(20, customers // 10),
        )


def _phone(index: int) -> str:
    """Unique, valid-looking +91 mobile numbers: 7919 is prime to 10^9, so the map is injective."""
    return f"+91{6 + index % 4}{(index * 7919 + 123_457) % 10**9:09d}"


def _email(rng: random.Random, index: int, first: str, last: str) -> str:
    local = f"{first}.{last}".lower().replace("'", "")
    return f"{local}{index}@{rng.choice(_DOMAINS)}"


def _spell_phone(rng: random.Random, phone: str) -> str:
    national = phone[-10:]
    return rng.choice(
        [
            phone,
            national,
            f"+91 {national[:5]} {national[5:]}",
            f"0{national[:5]}-{national[5:]}",
        ]
    )


class _Generator:
    def __init__(self, size: DemoSize) -> None:
        self.size = size
        self.rng = random.Random(SEED)
        self.epoch = datetime(2026, 1, 1, tzinfo=UTC)
        self.customers: list[tuple[str, str]] = []  # (email, phone) by customer id - 1

    def routes(self) -> Iterator[tuple]:
        for route_id in range(1, self.size.routes + 1):
            origin, destination = self.rng.sample(_AREAS, 2)
            yield (
                route_id,
                f"R{route_id:03d}",
                f"{origin} - {destination} Express",
                origin,
                destination,
                route_id % 9 != 0,
            )

    def stops(self) -> Iterator[tuple]:
        for stop_id in range(1, self.size.stops + 1):
            area = self.rng.choice(_AREAS)
            yield (
                stop_id,
                f"{area} Stop {stop_id}",
                f"Near {self.rng.choice(_STREETS)}",
                round(18.9 + self.rng.random() * 0.35, 6),
                round(72.8 + self.rng.random() * 0.2, 6),
            )

    def route_stops(self) -> Iterator[tuple]:
        for route_id in range(1, self.size.routes + 1):
            minutes = 6 * 60 + self.rng.randrange(0, 180)
            for sequence, stop_id in enumerate(self.rng.sample(range(1, self.size.stops + 1), 8), start=1):
                arrival = time(minutes // 60 % 24, minutes % 60)
                minutes += 2
                departure = time(minutes // 60 % 24, minutes % 60)
                minutes += self.rng.randrange(4, 12)
                yield route_id, sequence, stop_id, arrival, max(arrival, departure)

    def vehicles(self) -> Iterator[tuple]:
        for vehicle_id in range(1, self.size.vehicles + 1):
            yield (
                vehicle_id,
                f"MH-0{vehicle_id % 5 + 1}-{chr(65 + vehicle_id % 26)}{chr(65 + vehicle_id // 26 % 26)}"
                f"-{vehicle_id:04d}",
                self.rng.choice([32, 41, 50]),
                self.rng.choice(["Cityline Travels", "Metro Coaches", "Harbour Buses"]),
            )

    def trips(self) -> Iterator[tuple]:
        for trip_id in range(1, self.size.trips + 1):
            yield (
                trip_id,
                self.rng.randrange(1, self.size.routes + 1),
                self.rng.randrange(1, self.size.vehicles + 1),
                date(2026, 1, 1) + timedelta(days=trip_id % 300),
                time(6 + trip_id % 14, (trip_id * 5) % 60),
                self.rng.choice([4500, 6000, 7500, 9000]),
            )

    def customer_rows(self) -> Iterator[tuple]:
        for customer_id in range(1, self.size.customers + 1):
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            email, phone = _email(self.rng, customer_id, first, last), _phone(customer_id)
            self.customers.append((email, phone))
            yield (
                customer_id,
                f"{first} {last}",
                email,
                phone,
                date(1960, 1, 1) + timedelta(days=self.rng.randrange(0, 16000)),
                f"{self.rng.randrange(1, 300)}, {self.rng.choice(_STREETS)}, {self.rng.choice(_AREAS)}, Mumbai",
                round(18.9 + self.rng.random() * 0.35, 6),
                round(72.8 + self.rng.random() * 0.2, 6),
                self.epoch - timedelta(minutes=self.rng.randrange(0, 2_000_000)),
            )

    def bookings(self) -> Iterator[tuple]:
        for booking_id in range(1, self.size.bookings + 1):
            customer_id = self.rng.randrange(1, self.size.customers + 1)
            yield (
                booking_id,
                customer_id,
                self.rng.randrange(1, self.size.trips + 1),
                self.customers[customer_id - 1][0],
                self.rng.randint(1, 3),
                self.rng.choice(["confirmed", "completed", "completed", "cancelled"]),
                self.epoch + timedelta(minutes=booking_id),
            )

    def payments(self) -> Iterator[tuple]:
        for payment_id in range(1, self.size.payments + 1):
            booking_id = payment_id
            email, phone = self.customers[self.rng.randrange(0, self.size.customers)]
            by_upi = payment_id % 2 == 0
            vpa = (
                f"{phone[-10:]}@{self.rng.choice(_BANKS)}"
                if payment_id % 4 == 0
                else f"{email.split('@')[0]}@{self.rng.choice(_BANKS)}"
            )
            response = {
                "txn_id": f"TXN{payment_id:010d}",
                "status": "SUCCESS",
                "customer": {"email": email, "phone": int(phone[-10:]) if payment_id % 3 == 0 else phone},
            }
            if by_upi:
                response["vpa"] = vpa
            yield (
                payment_id,
                booking_id,
                self.rng.choice([4500, 6000, 9000]),
                "upi" if by_upi else "card",
                None if by_upi else f"{self.rng.randrange(0, 10_000):04d}",
                vpa if by_upi else None,
                json.dumps(response),
                self.epoch + timedelta(minutes=payment_id, seconds=30),
            )

    def tickets(self) -> Iterator[tuple]:
        for ticket_id in range(1, self.size.tickets + 1):
            customer_id = self.rng.randrange(1, self.size.customers + 1)
            email, phone = self.customers[customer_id - 1]
            spelled = _spell_phone(self.rng, phone)
            body = self.rng.choice(
                [
                    f"Bus was late at the stop. Please call me on {spelled} or write to {email}.",
                    f"Refund not received for my booking. My UPI is {phone[-10:]}@ybl, mobile {spelled}.",
                    f"Driver skipped my stop today; reach me at {email}. Thanks!",
                    f"Applying for the senior citizen pass. My Aadhaar is {_aadhaar(customer_id)}, mobile {spelled}.",
                    f"Charged twice for one booking. Refund to card {_card(customer_id)} please, or write to {email}.",
                ]
            )
            yield (
                ticket_id,
                customer_id,
                f"Complaint from {email}",
                body,
                [email, spelled],
                int(phone[-10:]) if ticket_id % 3 else None,
                self.epoch + timedelta(hours=ticket_id),
            )


def _aadhaar(customer_id: int) -> str:
    """A customer's Aadhaar number (Verhoeff-valid), spelled 4-4-4."""
    number = f"{2 + customer_id % 8}{customer_id:010d}"
    number += verhoeff_check_digit(number)
    return f"{number[:4]} {number[4:8]} {number[8:]}"


def _card(customer_id: int) -> str:
    """A customer's card number (16 digits, Luhn-valid), spelled in fours."""
    number = f"4{customer_id:014d}"
    number += luhn_check_digit(number)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def _copy(conn: psycopg.Connection, table: str, rows: Iterator[tuple]) -> int:
    count = 0
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def load_demo_database(
    conninfo: str, scale: float = DEFAULT_SCALE, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Create the demo schema in the (empty) database at `conninfo` and fill it; returns rows per table."""
    size = DemoSize.at_scale(scale)
    generator = _Generator(size)
    schema = resources.files("refresh_pipeline.demo").joinpath("schema.sql").read_text()
    counts: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        conn.execute(schema)
        for table, rows in [
            ("routes", generator.routes()),
            ("stops", generator.stops()),
            ("route_stops", generator.route_stops()),
            ("vehicles", generator.vehicles()),
            ("trips", generator.trips()),
            ("customers", generator.customer_rows()),
            ("bookings", generator.bookings()),
            ("payments", generator.payments()),
            ("support_tickets", generator.tickets()),
        ]:
            counts[table] = _copy(conn, table, rows)
            log(f"  {table}: {counts[table]:,} rows")
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return counts
