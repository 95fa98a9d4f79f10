"""The sales and marketing dataset: an initial load, then an endless, drifting change stream.

Everything follows from ``GeneratorConfig``: one random generator seeded once, a simulated
clock, and no iteration over unordered containers, so the same config yields the same
documents and the same operations, byte for byte. ``state`` is the source's truth (every
document as it is now), which tests compare silver against.

Documents are never mutated in place: an update builds a new dict, so an operation's
post-image stays valid after later changes.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bson import ObjectId

from data_generator import domain
from data_generator.config import COLLECTIONS, DRIFT_STEPS, GeneratorConfig
from data_generator.operations import Delete, Insert, Operation, Replace, Update

# Daily volumes at scale 1.0.
_CUSTOMERS = 2000
_PRODUCTS = 200
_CAMPAIGNS = 24
_SESSIONS_PER_DAY = 100
_OFFLINE_ORDERS_PER_DAY = 12
_POSTS_PER_DAY = 3
_RECENT_SPEND_KEPT = 200

# How often each kind of change happens after the initial load (relative weights).
_CHANGE_WEIGHTS = {
    "session": 24.0,
    "purchase": 10.0,
    "offline_order": 4.0,
    "advance_order": 26.0,
    "new_customer": 4.0,
    "update_customer": 5.0,
    "replace_customer": 1.0,
    "reprice_product": 3.0,
    "replace_product": 1.0,
    "new_product": 0.5,
    "restate_spend": 6.0,
    "new_post": 2.0,
    "engage_post": 8.0,
    "update_campaign": 1.0,
    "new_campaign": 0.5,
    "delete": 4.5,
}


def _ms(moment: datetime) -> datetime:
    """MongoDB stores milliseconds: keep only those, so the state equals what MongoDB returns."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class _Pool:
    """A list with O(1) add, remove and uniform random choice."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._positions: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: Any) -> bool:
        return item in self._positions

    def add(self, item: Any) -> None:
        if item not in self._positions:
            self._positions[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: Any) -> None:
        position = self._positions.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._positions[last] = position

    def choice(self, rng: random.Random) -> Any:
        return self._items[rng.randrange(len(self._items))]


class SalesMarketingGenerator:
    """Customers, products, orders, campaigns, ad spend, web sessions and social engagement."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = config or GeneratorConfig()
        self.rng = random.Random(self.config.seed)
        self.state: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in COLLECTIONS}
        self.load_time = _ms(self.config.start + timedelta(days=self.config.history_days))
        self.clock = self.load_time
        self.changes_made = 0
        self._loaded = False
        # About 150 changes per simulated day at scale 1: the history's own pace.
        self._mean_gap = self.config.mean_seconds_between_changes or 86400.0 / (150.0 * self.config.scale)
        self._counters = {"customer": 0, "order": 0, "product": 0, "campaign": 0, "post": 0, "session": 0}
        self._customer_ids: list[ObjectId] = []  # ordered by created_at
        self._customer_created: list[datetime] = []
        self._customer_activity: dict[ObjectId, int] = {}
        self._idle_customers = _Pool()
        self._products: list[str] = []
        self._open_orders = _Pool()
        self._cancelled_orders = _Pool()
        self._anonymous_sessions = _Pool()
        self._posts = _Pool()
        self._recent_spend: list[str] = []
        self._campaign_ids: list[str] = []
        self._active_campaigns: dict[date, list[str]] = {}
        self._spend_through = self.load_time.date() - timedelta(days=1)

    # ------------------------------------------------------------------ public API

    @property
    def drift_level(self) -> int:
        """How many of ``DRIFT_STEPS`` are in effect."""
        return min(len(DRIFT_STEPS), self.changes_made // self.config.drift_every)

    def document_counts(self) -> dict[str, int]:
        return {name: len(documents) for name, documents in self.state.items()}

    def initial_load(self) -> list[Insert]:
        """The initial dataset as inserts, history included; call once, before ``changes``."""
        if self._loaded:
            raise RuntimeError("the initial load was already generated")
        self._loaded = True
        inserts: list[Insert] = []
        for _ in range(self._scaled(_PRODUCTS)):
            inserts.append(self._insert("products", self._new_product(self.config.start - timedelta(days=400))))
        for _ in range(max(3, self._scaled(_CAMPAIGNS))):
            # Most campaigns run during the history, a few are scheduled after the load.
            offset = self.rng.uniform(-10, self.config.history_days - 1)
            if self.rng.random() < 0.2:
                offset = self.rng.uniform(self.config.history_days, self.config.history_days + 20)
            begin = self.config.start + timedelta(days=offset)
            inserts.append(self._insert("campaigns", self._new_campaign(_ms(begin), created=self.config.start)))
        created = sorted(
            _ms(self.config.start + timedelta(seconds=self.rng.uniform(-180 * 86400, self.config.history_days * 86400)))
            for _ in range(self._scaled(_CUSTOMERS))
        )
        for moment in created:
            inserts.append(self._insert("customers", self._new_customer(moment)))
        sessions: list[Insert] = []
        orders: list[Insert] = []
        spend: list[Insert] = []
        posts: list[Insert] = []
        for day_index in range(self.config.history_days):
            day = self.config.start.date() + timedelta(days=day_index)
            for _ in range(self._poisson(_SESSIONS_PER_DAY * self.config.scale)):
                at = _ms(_midnight(day) + timedelta(seconds=self.rng.uniform(0, 86400)))
                session, order = self._new_session(at, purchase=None)
                sessions.append(self._insert("web_sessions", session))
                if order is not None:
                    orders.append(self._insert("orders", self._age_order(order)))
            for _ in range(self._poisson(_OFFLINE_ORDERS_PER_DAY * self.config.scale)):
                at = _ms(_midnight(day) + timedelta(seconds=self.rng.uniform(0, 86400)))
                order = self._new_order(at, self.rng.choice(domain.OFFLINE_SALES_CHANNELS), session_id=None)
                if order is not None:
                    orders.append(self._insert("orders", self._age_order(order)))
            spend.extend(self._insert("ad_spend", document) for document in self._spend_for_day(day))
            for _ in range(self._poisson(_POSTS_PER_DAY * self.config.scale)):
                at = _ms(_midnight(day) + timedelta(seconds=self.rng.uniform(0, 86400)))
                posts.append(self._insert("social_engagement", self._new_post(at, age_to=self.load_time)))
        return inserts + spend + sessions + orders + posts

    def change_groups(self, limit: int | None = None) -> Iterator[list[Operation]]:
        """The change stream after the initial load, one change at a time, until ``limit`` operations.

        A change may take several operations (a purchase is a session and an order; a
        simulated midnight lands a day of ad spend), and ``state`` already includes all of
        them: stop consuming between changes, never inside one. The stream can therefore
        run a few operations past ``limit``.
        """
        if not self._loaded:
            raise RuntimeError("generate the initial load first (or resume from existing documents)")
        names = list(_CHANGE_WEIGHTS)
        weights = list(_CHANGE_WEIGHTS.values())
        produced = 0
        while limit is None or produced < limit:
            self.clock = _ms(self.clock + timedelta(seconds=self.rng.expovariate(1.0 / self._mean_gap)))
            operations = self._roll_days() or self._change(self.rng.choices(names, weights)[0])
            produced += len(operations)
            self.changes_made += len(operations)
            yield operations

    def changes(self, limit: int | None = None) -> Iterator[Operation]:
        """``change_groups`` flattened: consume it to the end (or use ``change_groups`` to stop early)."""
        for operations in self.change_groups(limit):
            yield from operations

    @classmethod
    def resume(
        cls, documents: Mapping[str, Iterable[Mapping[str, Any]]], config: GeneratorConfig | None = None
    ) -> SalesMarketingGenerator:
        """A generator that continues from existing documents (for example, what MongoDB holds).

        The change stream after a resume is deterministic for the same documents and seed,
        but differs from the one an uninterrupted generator would have produced.
        """
        generator = cls(config)
        generator._loaded = True
        loaded = {name: [dict(document) for document in documents.get(name, ())] for name in COLLECTIONS}
        total = sum(len(items) for items in loaded.values())
        generator.rng = random.Random(f"{generator.config.seed}:{total}")
        latest = generator.load_time
        for document in sorted(loaded["customers"], key=lambda item: (item["created_at"], str(item["_id"]))):
            generator._track("customers", document)
        for name in ("products", "campaigns", "ad_spend", "web_sessions", "orders", "social_engagement"):
            for document in loaded[name]:
                generator._track(name, document)
        for name in COLLECTIONS:
            for document in loaded[name]:
                for key in ("updated_at", "started_at", "placed_at", "published_at", "created_at"):
                    value = document.get(key)
                    if isinstance(value, datetime):
                        latest = max(latest, value.replace(tzinfo=UTC) if value.tzinfo is None else value)
        generator.clock = _ms(latest)
        spend_days = [document["date"].date() for document in loaded["ad_spend"]]
        generator._spend_through = max(spend_days) if spend_days else generator.clock.date() - timedelta(days=1)
        generator._recent_spend = [
            document["_id"] for document in sorted(loaded["ad_spend"], key=lambda item: (item["date"], item["_id"]))
        ][-_RECENT_SPEND_KEPT:]
        generator.changes_made = generator.config.drift_every * generator._detect_drift()
        return generator

    # ------------------------------------------------------------------ helpers

    def _scaled(self, base: int) -> int:
        return max(1, round(base * self.config.scale))

    def _poisson(self, mean: float) -> int:
        """Knuth's method for small means, a rounded normal for large ones."""
        if mean > 30:
            return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))
        threshold, count, product = math.exp(-mean), 0, self.rng.random()
        while product > threshold:
            count += 1
            product *= self.rng.random()
        return count

    def _object_id(self, at: datetime) -> ObjectId:
        return ObjectId(int(at.timestamp()).to_bytes(4, "big") + self.rng.randbytes(8))

    def _next(self, counter: str) -> int:
        self._counters[counter] += 1
        return self._counters[counter]

    def _insert(self, collection: str, document: dict[str, Any], at: datetime | None = None) -> Insert:
        self.state[collection][document["_id"]] = document
        self._track(collection, document)
        return Insert(collection, document, at or self.load_time)

    def _update(
        self,
        collection: str,
        document_id: Any,
        set_fields: dict[str, Any] | None = None,
        unset_fields: tuple[str, ...] = (),
        push_fields: dict[str, Any] | None = None,
    ) -> Update:
        before = self.state[collection][document_id]
        after = {**before, **(set_fields or {})}
        for name in unset_fields:
            after.pop(name, None)
        for name, value in (push_fields or {}).items():
            after[name] = [*before.get(name, []), value]
        self.state[collection][document_id] = after
        return Update(collection, document_id, after, self.clock, dict(set_fields or {}), unset_fields, dict(push_fields or {}))

    def _replace(self, collection: str, document: dict[str, Any]) -> Replace:
        self.state[collection][document["_id"]] = document
        return Replace(collection, document, self.clock)

    def _delete(self, collection: str, document_id: Any) -> Delete:
        del self.state[collection][document_id]
        return Delete(collection, document_id, self.clock)

    def _track(self, collection: str, document: Mapping[str, Any]) -> None:
        """Index a document that is new to the generator (insert or resume)."""
        self.state[collection][document["_id"]] = dict(document)
        if collection == "customers":
            self._customer_ids.append(document["_id"])
            created = document["created_at"]
            self._customer_created.append(created if created.tzinfo else created.replace(tzinfo=UTC))
            self._customer_activity.setdefault(document["_id"], 0)
            if self._customer_activity[document["_id"]] == 0:
                self._idle_customers.add(document["_id"])
            self._bump_counter("customer", document["customer_number"])
        elif collection == "products":
            self._products.append(document["_id"])
            self._bump_counter("product", document["_id"])
        elif collection == "campaigns":
            self._campaign_ids.append(document["_id"])
            self._active_campaigns.clear()
            self._bump_counter("campaign", document["_id"])
        elif collection == "orders":
            self._touch_customer(document["customer_id"])
            status = document["status"]
            if status == "cancelled":
                self._cancelled_orders.add(document["_id"])
            elif status != "refunded":
                self._open_orders.add(document["_id"])
            self._bump_counter("order", document["order_number"])
        elif collection == "web_sessions":
            if document.get("customer_id") is not None:
                self._touch_customer(document["customer_id"])
            elif "order_id" not in document:
                self._anonymous_sessions.add(document["_id"])
            self._bump_counter("session", document["_id"].split(".")[1])
        elif collection == "social_engagement":
            self._posts.add(document["_id"])
            self._bump_counter("post", document["_id"])
        elif collection == "ad_spend":
            self._recent_spend.append(document["_id"])
            del self._recent_spend[:-_RECENT_SPEND_KEPT]

    def _bump_counter(self, counter: str, label: str) -> None:
        digits = "".join(character for character in label if character.isdigit())
        if digits:
            self._counters[counter] = max(self._counters[counter], int(digits))

    def _touch_customer(self, customer_id: ObjectId) -> None:
        self._customer_activity[customer_id] = self._customer_activity.get(customer_id, 0) + 1
        self._idle_customers.discard(customer_id)

    def _detect_drift(self) -> int:
        customers = self.state["customers"].values()
        if any("geo" in order.get("shipping", {}).get("address", {}) for order in self.state["orders"].values()):
            return 4
        if any(isinstance(customer.get("zip_code"), str) for customer in customers):
            return 3
        return 1 if any("loyalty_tier" in customer for customer in customers) else 0

    def _customer_at(self, at: datetime) -> ObjectId | None:
        """A random customer who already existed at ``at``."""
        eligible = bisect_right(self._customer_created, at)
        for _ in range(8):
            if eligible == 0:
                return None
            candidate = self._customer_ids[self.rng.randrange(eligible)]
            if candidate in self.state["customers"]:
                return candidate
        return None

    def _active_product(self) -> str | None:
        for _ in range(16):
            sku = self._products[self.rng.randrange(len(self._products))]
            if self.state["products"][sku]["active"]:
                return sku
        return None

    def _campaigns_on(self, day: date) -> list[str]:
        if day not in self._active_campaigns:
            campaigns = self.state["campaigns"]
            self._active_campaigns[day] = [
                campaign_id
                for campaign_id in self._campaign_ids
                if campaign_id in campaigns
                and campaigns[campaign_id]["status"] != "paused"
                and campaigns[campaign_id]["start_date"].date() <= day <= campaigns[campaign_id]["end_date"].date()
            ]
        return self._active_campaigns[day]

    # ------------------------------------------------------------------ documents

    def _new_product(self, at: datetime) -> dict[str, Any]:
        number = self._next("product")
        category = self.rng.choice(domain.PRODUCT_CATEGORIES)
        low, high = domain.CATEGORY_PRICE_RANGES[category]
        price = round(self.rng.uniform(low, high), 2)
        created = _ms(at)
        return {
            "_id": f"SKU-{number:05d}",
            "name": f"{self.rng.choice(domain.ADJECTIVES)} {self.rng.choice(domain.NOUNS[category])}",
            "category": category,
            "brand": self.rng.choice(domain.BRANDS),
            "price": price,
            "cost": round(price * self.rng.uniform(0.45, 0.7), 2),
            "currency": "USD",
            "active": True,
            "attributes": {"color": self.rng.choice(domain.COLORS), "size": self.rng.choice(domain.SIZES)},
            "tags": self.rng.sample(["new", "bestseller", "gift", "eco", "limited", "bundle"], self.rng.randint(0, 3)),
            "created_at": created,
            "updated_at": created,
            "__v": 0,  # the catalogue service uses Mongoose, which versions documents in __v
        }

    def _new_campaign(self, begin: datetime, created: datetime) -> dict[str, Any]:
        number = self._next("campaign")
        channel = self.rng.choice(list(domain.CAMPAIGN_CHANNELS))
        source, medium, _ = domain.CAMPAIGN_CHANNELS[channel]
        theme = self.rng.choice(domain.CAMPAIGN_THEMES)
        start = _midnight(begin.date())
        end = start + timedelta(days=self.rng.randint(14, 60))
        status = "scheduled" if start > self.clock else ("ended" if end < _midnight(self.clock.date()) else "active")
        return {
            "_id": f"CMP-{number:04d}",
            "name": f"{theme.replace('_', ' ').title()} #{number}",
            "channel": channel,
            "utm_source": source,
            "utm_medium": medium,
            "utm_campaign": f"{theme}_cmp{number:04d}",
            "objective": self.rng.choice(domain.CAMPAIGN_OBJECTIVES),
            "start_date": start,
            "end_date": end,
            "daily_budget": float(self.rng.choice((50, 100, 150, 250, 400))),
            "status": status,
            "created_at": _ms(created),
            "updated_at": _ms(created),
        }

    def _new_customer(self, at: datetime) -> dict[str, Any]:
        number = self._next("customer")
        first, last = self.rng.choice(domain.FIRST_NAMES), self.rng.choice(domain.LAST_NAMES)
        country = self.rng.choice(list(domain.CITIES))
        customer: dict[str, Any] = {
            "_id": self._object_id(at),
            "customer_number": f"C{number:07d}",
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}{number}@{self.rng.choice(domain.EMAIL_DOMAINS)}".lower().replace(" ", ""),
            "phone": f"+1-555-{self.rng.randrange(10000):04d}",
            "segment": self.rng.choices(domain.SEGMENTS, (0.85, 0.15))[0],
            "country": country,
            "city": self.rng.choice(domain.CITIES[country]),
            "zip_code": self._postal_code(country),
            "address": {"street": f"{self.rng.randint(1, 999)} Main Street", "country": country},
            "marketing_opt_in": self.rng.random() < 0.6,
            "preferences": self._preferences(),
            "created_at": at,
            "updated_at": at,
        }
        if self.drift_level < 2 and self.rng.random() < 0.3:
            customer["fax"] = f"+1-555-{self.rng.randrange(10000):04d}"
        if self.drift_level >= 1:
            customer["loyalty_tier"] = self.rng.choice(domain.LOYALTY_TIERS)
        return customer

    def _postal_code(self, country: str) -> int | str:
        """Digits that may start with 0: an int before drift step 3 (losing the zero), a string after."""
        code = "".join(str(self.rng.randrange(10)) for _ in range(domain.POSTAL_CODE_DIGITS[country]))
        return code if self.drift_level >= 3 else int(code)

    def _contact_channels(self) -> list[str]:
        return self.rng.sample(list(domain.CONTACT_CHANNELS), self.rng.randint(1, 3))

    def _new_session(self, at: datetime, purchase: bool | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A web session and, if it converts, its order. ``purchase=None`` lets the funnel decide."""
        depth = 1
        while depth < len(domain.FUNNEL_STEPS) and self.rng.random() < domain.FUNNEL_CONTINUE[depth - 1]:
            depth += 1
        if purchase is True:
            depth = len(domain.FUNNEL_STEPS)
        elif purchase is False:
            depth = min(depth, len(domain.FUNNEL_STEPS) - 1)
        customer_id = self._customer_at(at) if self.rng.random() < 0.55 or depth == len(domain.FUNNEL_STEPS) else None
        if depth == len(domain.FUNNEL_STEPS) and customer_id is None:
            depth -= 1
        number = self._next("session")
        session_id = f"{int(at.timestamp())}.{number:07d}"
        device = self.rng.choices(domain.DEVICES, (0.45, 0.48, 0.07))[0]
        session: dict[str, Any] = {"_id": session_id}
        if customer_id is not None:
            session["customer_id"] = customer_id
        session["anonymous_id"] = f"anon-{self.rng.getrandbits(48):012x}"
        session["started_at"] = at
        session.update(self._traffic(at.date()))
        session["device"] = device
        session["landing_page"] = self.rng.choice(domain.LANDING_PAGES)
        events: list[dict[str, Any]] = []
        moment = at
        sku = self._active_product()
        for step in domain.FUNNEL_STEPS[:depth]:
            moment = _ms(moment + timedelta(seconds=self.rng.uniform(5, 240)))
            event: dict[str, Any] = {"name": step, "at": moment}
            if step in ("view_item", "add_to_cart") and sku is not None:
                event["sku"] = sku
            events.append(event)
        session["events"] = events
        session["pageviews"] = depth + self.rng.randint(0, 6)
        session["ended_at"] = _ms(moment + timedelta(seconds=self.rng.uniform(10, 600)))
        order = None
        if depth == len(domain.FUNNEL_STEPS):
            channel = "mobile_app" if device == "mobile" and self.rng.random() < 0.5 else "web"
            order = self._new_order(events[-1]["at"], channel, session_id=session_id, customer_id=customer_id)
            if order is None:
                session["events"] = events[:-1]
            else:
                session["order_id"] = order["_id"]
        return session, order

    def _traffic(self, day: date) -> dict[str, Any]:
        """UTM fields as GA records them: none for direct traffic, source/medium for organic."""
        roll = self.rng.random()
        campaigns = self._campaigns_on(day)
        if roll < 0.5 and campaigns:
            campaign = self.state["campaigns"][self.rng.choice(campaigns)]
            return {
                "utm_source": campaign["utm_source"],
                "utm_medium": campaign["utm_medium"],
                "utm_campaign": campaign["utm_campaign"],
                "referrer": self.rng.choice(domain.REFERRERS),
            }
        if roll < 0.65:
            return {"utm_source": "google", "utm_medium": "organic", "referrer": "google.com"}
        return {}

    def _new_order(
        self, at: datetime, channel: str, session_id: str | None, customer_id: ObjectId | None = None
    ) -> dict[str, Any] | None:
        customer_id = customer_id or self._customer_at(at)
        skus: list[str] = []
        for _ in range(self.rng.choices((1, 2, 3, 4), (0.5, 0.3, 0.15, 0.05))[0]):
            sku = self._active_product()
            if sku is not None and sku not in skus:
                skus.append(sku)
        if customer_id is None or not skus:
            return None
        items = []
        for sku in skus:
            quantity = self.rng.choices((1, 2, 3), (0.7, 0.2, 0.1))[0]
            unit_price = self.state["products"][sku]["price"]
            discount = round(unit_price * quantity * self.rng.choice((0.1, 0.15, 0.2)), 2) if self.rng.random() < 0.15 else 0.0
            items.append({"sku": sku, "quantity": quantity, "unit_price": unit_price, "discount": discount})
        subtotal = round(sum(item["quantity"] * item["unit_price"] for item in items), 2)
        discount_total = round(sum(item["discount"] for item in items), 2)
        shipping_fee = 0.0 if channel == "store" or subtotal >= 100 else 4.99
        customer = self.state["customers"][customer_id]
        address: dict[str, Any] = {"city": customer["city"], "country": customer["country"]}
        if self.drift_level >= 4:
            latitude, longitude = domain.CITY_COORDINATES[customer["country"]]
            address["geo"] = {
                "lat": round(latitude + self.rng.uniform(-3, 3), 4),
                "lon": round(longitude + self.rng.uniform(-3, 3), 4),
            }
        order: dict[str, Any] = {
            "_id": self._object_id(at),
            "order_number": f"ORD-{self._next('order'):08d}",
            "customer_id": customer_id,
        }
        if session_id is not None:
            order["session_id"] = session_id
        order.update(
            {
                "channel": channel,
                "currency": "USD",
                "placed_at": at,
                "status": "placed",
                "status_history": [{"status": "placed", "at": at}],
                "items": items,
                "subtotal": subtotal,
                "discount_total": discount_total,
                "shipping_fee": shipping_fee,
                "total": round(subtotal - discount_total + shipping_fee, 2),
                "shipping": {
                    "method": "pickup" if channel == "store" else self.rng.choice(domain.SHIPPING_METHODS),
                    "address": address,
                },
                "updated_at": at,
            }
        )
        return order

    def _age_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Walk a historical order through its lifecycle up to the load time."""
        history = list(order["status_history"])
        moment = order["placed_at"]
        for status in self._lifecycle():
            moment = _ms(moment + self._transition_delay(status))
            if moment > self.load_time:
                break
            history.append({"status": status, "at": moment})
        last = history[-1]
        return {**order, "status": last["status"], "status_history": history, "updated_at": last["at"]}

    def _lifecycle(self) -> list[str]:
        roll = self.rng.random()
        if roll < 0.10:
            return ["cancelled"]
        if roll < 0.14:
            return ["paid", "cancelled"]
        path = ["paid", "shipped", "delivered"]
        return [*path, "refunded"] if self.rng.random() < 0.06 else path

    def _transition_delay(self, status: str) -> timedelta:
        hours = {"paid": (0.02, 1), "cancelled": (0.2, 24), "shipped": (6, 48), "delivered": (24, 96), "refunded": (48, 336)}
        low, high = hours[status]
        return timedelta(hours=self.rng.uniform(low, high))

    def _spend_for_day(self, day: date) -> list[dict[str, Any]]:
        documents = []
        for campaign_id in self._campaigns_on(day):
            campaign = self.state["campaigns"][campaign_id]
            low, high = domain.CAMPAIGN_CHANNELS[campaign["channel"]][2]
            spend = round(self.rng.uniform(low, high) * campaign["daily_budget"] / 150, 2)
            impressions = int(spend * self.rng.uniform(80, 250))
            documents.append(
                {
                    "_id": f"{campaign_id}:{day.isoformat()}",
                    "campaign_id": campaign_id,
                    "channel": campaign["channel"],
                    "date": _midnight(day),
                    "spend": spend,
                    "impressions": impressions,
                    "clicks": int(impressions * self.rng.uniform(0.005, 0.04)),
                    "currency": "USD",
                    "updated_at": _ms(_midnight(day) + timedelta(days=1, minutes=self.rng.uniform(5, 300))),
                }
            )
        return documents

    def _new_post(self, at: datetime, age_to: datetime) -> dict[str, Any]:
        number = self._next("post")
        post: dict[str, Any] = {"_id": f"POST-{number:06d}", "platform": self.rng.choice(domain.SOCIAL_PLATFORMS)}
        campaigns = self._campaigns_on(at.date())
        if campaigns and self.rng.random() < 0.6:
            post["campaign_id"] = self.rng.choice(campaigns)
        post.update({"content_type": self.rng.choice(domain.SOCIAL_CONTENT_TYPES), "published_at": at})
        hours = max(0.0, (age_to - at).total_seconds() / 3600)
        reach = int(self.rng.uniform(200, 5000) * min(1.0, 0.2 + hours / 72))
        post.update(
            {
                "impressions": reach,
                "likes": int(reach * self.rng.uniform(0.01, 0.08)),
                "comments": int(reach * self.rng.uniform(0.001, 0.01)),
                "shares": int(reach * self.rng.uniform(0.001, 0.02)),
                "clicks": int(reach * self.rng.uniform(0.002, 0.03)),
                "updated_at": max(at, age_to),
            }
        )
        return post

    # ------------------------------------------------------------------ changes

    def _roll_days(self) -> list[Operation]:
        """At each simulated midnight: yesterday's ad spend lands and campaign statuses follow their dates."""
        operations: list[Operation] = []
        while self._spend_through < self.clock.date() - timedelta(days=1):
            self._spend_through += timedelta(days=1)
            day = self._spend_through
            for document in self._spend_for_day(day):
                if document["_id"] not in self.state["ad_spend"]:
                    operations.append(self._insert("ad_spend", document, self.clock))
            today = day + timedelta(days=1)
            for campaign_id in self._campaign_ids:
                campaign = self.state["campaigns"].get(campaign_id)
                if campaign is None or campaign["status"] == "paused":
                    continue
                expected = (
                    "scheduled"
                    if campaign["start_date"].date() > today
                    else ("ended" if campaign["end_date"].date() < today else "active")
                )
                if expected != campaign["status"]:
                    operations.append(self._update("campaigns", campaign_id, {"status": expected, "updated_at": self.clock}))
            self._active_campaigns.clear()
        return operations

    def _change(self, kind: str) -> list[Operation]:
        handler = getattr(self, f"_change_{kind}")
        operations: list[Operation] = handler()
        return operations or self._change_session()

    def _change_session(self) -> list[Operation]:
        session, _ = self._new_session(self.clock, purchase=False)
        return [self._insert("web_sessions", session, self.clock)]

    def _change_purchase(self) -> list[Operation]:
        session, order = self._new_session(self.clock, purchase=True)
        operations: list[Operation] = [self._insert("web_sessions", session, self.clock)]
        if order is not None:
            operations.append(self._insert("orders", order, self.clock))
        return operations

    def _change_offline_order(self) -> list[Operation]:
        order = self._new_order(self.clock, self.rng.choice(domain.OFFLINE_SALES_CHANNELS), session_id=None)
        return [self._insert("orders", order, self.clock)] if order else []

    def _change_advance_order(self) -> list[Operation]:
        for _ in range(8):
            if not len(self._open_orders):
                return []
            order_id = self._open_orders.choice(self.rng)
            status = self.state["orders"][order_id]["status"]
            if status == "placed":
                following = "paid" if self.rng.random() < 0.88 else "cancelled"
            elif status == "paid":
                following = "shipped" if self.rng.random() < 0.95 else "cancelled"
            elif status == "shipped":
                following = "delivered"
            elif self.rng.random() < 0.15:
                following = "refunded"
            else:
                self._open_orders.discard(order_id)  # delivered and kept: its lifecycle is over
                continue
            if following in domain.TERMINAL_STATUSES:
                self._open_orders.discard(order_id)
            if following == "cancelled":
                self._cancelled_orders.add(order_id)
            return [
                self._update(
                    "orders",
                    order_id,
                    {"status": following, "updated_at": self.clock},
                    push_fields={"status_history": {"status": following, "at": self.clock}},
                )
            ]
        return []

    def _change_new_customer(self) -> list[Operation]:
        return [self._insert("customers", self._new_customer(self.clock), self.clock)]

    def _change_update_customer(self) -> list[Operation]:
        customer_id = self._customer_at(self.clock)
        if customer_id is None:
            return []
        customer = self.state["customers"][customer_id]
        changes: dict[str, Any] = {"updated_at": self.clock}
        roll = self.rng.random()
        if roll < 0.3:
            changes["email"] = (
                f"{customer['first_name']}.{self.rng.getrandbits(20)}@{self.rng.choice(domain.EMAIL_DOMAINS)}".lower().replace(
                    " ", ""
                )
            )
        elif roll < 0.55:
            changes["marketing_opt_in"] = not customer["marketing_opt_in"]
        elif roll < 0.8:
            changes["preferences"] = self._preferences()
        else:
            changes["phone"] = f"+1-555-{self.rng.randrange(10000):04d}"
        level = self.drift_level
        if level >= 1:
            changes["loyalty_tier"] = self.rng.choice(domain.LOYALTY_TIERS)
        if level >= 3 and not isinstance(customer["zip_code"], str):
            changes["zip_code"] = str(customer["zip_code"]).zfill(domain.POSTAL_CODE_DIGITS[customer["country"]])
        unset = ("fax",) if level >= 2 and "fax" in customer else ()
        return [self._update("customers", customer_id, changes, unset)]

    def _preferences(self) -> dict[str, Any]:
        return {"newsletter": self.rng.random() < 0.5, "channels": self._contact_channels()}

    def _change_replace_customer(self) -> list[Operation]:
        customer_id = self._customer_at(self.clock)
        if customer_id is None:
            return []
        old = self.state["customers"][customer_id]
        fresh = self._new_customer(old["created_at"])
        self._counters["customer"] -= 1
        fresh.update({"_id": customer_id, "customer_number": old["customer_number"], "updated_at": self.clock})
        return [self._replace("customers", fresh)]

    def _change_reprice_product(self) -> list[Operation]:
        sku = self._products[self.rng.randrange(len(self._products))]
        product = self.state["products"][sku]
        version = product.get("__v", 0) + 1
        if self.rng.random() < 0.1:
            changes = {"active": not product["active"], "updated_at": self.clock, "__v": version}
            return [self._update("products", sku, changes)]
        price = round(product["price"] * self.rng.uniform(0.85, 1.15), 2)
        return [self._update("products", sku, {"price": price, "updated_at": self.clock, "__v": version})]

    def _change_replace_product(self) -> list[Operation]:
        sku = self._products[self.rng.randrange(len(self._products))]
        old = self.state["products"][sku]
        low, high = domain.CATEGORY_PRICE_RANGES[old["category"]]
        price = round(self.rng.uniform(low, high), 2)
        fresh = {
            **old,
            "brand": self.rng.choice(domain.BRANDS),
            "price": price,
            "cost": round(price * self.rng.uniform(0.45, 0.7), 2),
            "tags": self.rng.sample(["new", "bestseller", "gift", "eco", "limited", "bundle"], self.rng.randint(0, 3)),
            "updated_at": self.clock,
            "__v": old.get("__v", 0) + 1,
        }
        return [self._replace("products", fresh)]

    def _change_new_product(self) -> list[Operation]:
        return [self._insert("products", self._new_product(self.clock), self.clock)]

    def _change_restate_spend(self) -> list[Operation]:
        candidates = [spend_id for spend_id in self._recent_spend if spend_id in self.state["ad_spend"]]
        if not candidates:
            return []
        spend_id = self.rng.choice(candidates)
        spend = self.state["ad_spend"][spend_id]
        factor = self.rng.uniform(0.95, 1.05)
        return [
            self._update(
                "ad_spend",
                spend_id,
                {"spend": round(spend["spend"] * factor, 2), "clicks": int(spend["clicks"] * factor), "updated_at": self.clock},
            )
        ]

    def _change_new_post(self) -> list[Operation]:
        return [self._insert("social_engagement", self._new_post(self.clock, age_to=self.clock), self.clock)]

    def _change_engage_post(self) -> list[Operation]:
        if not len(self._posts):
            return []
        post_id = self._posts.choice(self.rng)
        post = self.state["social_engagement"][post_id]
        grown = int(post["impressions"] * self.rng.uniform(0.02, 0.3)) + 1
        return [
            self._update(
                "social_engagement",
                post_id,
                {
                    "impressions": post["impressions"] + grown,
                    "likes": post["likes"] + int(grown * self.rng.uniform(0.01, 0.08)),
                    "comments": post["comments"] + int(grown * self.rng.uniform(0.001, 0.01)),
                    "shares": post["shares"] + int(grown * self.rng.uniform(0.001, 0.02)),
                    "clicks": post["clicks"] + int(grown * self.rng.uniform(0.002, 0.03)),
                    "updated_at": self.clock,
                },
            )
        ]

    def _change_update_campaign(self) -> list[Operation]:
        if not self._campaign_ids:
            return []
        campaign_id = self.rng.choice(self._campaign_ids)
        campaign = self.state["campaigns"][campaign_id]
        self._active_campaigns.clear()
        if campaign["status"] == "paused":
            return [self._update("campaigns", campaign_id, {"status": "active", "updated_at": self.clock})]
        if campaign["status"] == "active" and self.rng.random() < 0.3:
            return [self._update("campaigns", campaign_id, {"status": "paused", "updated_at": self.clock})]
        budget = float(self.rng.choice((50, 100, 150, 250, 400)))
        return [self._update("campaigns", campaign_id, {"daily_budget": budget, "updated_at": self.clock})]

    def _change_new_campaign(self) -> list[Operation]:
        begin = self.clock + timedelta(days=self.rng.uniform(0, 7))
        return [self._insert("campaigns", self._new_campaign(_ms(begin), created=self.clock), self.clock)]

    def _change_delete(self) -> list[Operation]:
        """Bot sessions are purged, posts taken down, idle sign-ups erased, cancelled orders archived."""
        roll = self.rng.random()
        if roll < 0.4 and len(self._anonymous_sessions):
            session_id = self._anonymous_sessions.choice(self.rng)
            self._anonymous_sessions.discard(session_id)
            return [self._delete("web_sessions", session_id)]
        if roll < 0.6 and len(self._posts):
            post_id = self._posts.choice(self.rng)
            self._posts.discard(post_id)
            return [self._delete("social_engagement", post_id)]
        if roll < 0.8 and len(self._idle_customers):
            customer_id = self._idle_customers.choice(self.rng)
            self._idle_customers.discard(customer_id)
            return [self._delete("customers", customer_id)]
        if len(self._cancelled_orders):
            order_id = self._cancelled_orders.choice(self.rng)
            self._cancelled_orders.discard(order_id)
            return [self._delete("orders", order_id)]
        return []


__all__ = ["SalesMarketingGenerator"]
