"""Reference data of the sales and marketing domain: catalogue, channels, funnel, lifecycle."""

from __future__ import annotations

PRODUCT_CATEGORIES = ("Electronics", "Home", "Apparel", "Beauty", "Sports", "Toys", "Books", "Grocery")
CATEGORY_PRICE_RANGES = {
    "Electronics": (29.0, 899.0),
    "Home": (9.0, 249.0),
    "Apparel": (12.0, 149.0),
    "Beauty": (6.0, 89.0),
    "Sports": (15.0, 399.0),
    "Toys": (8.0, 119.0),
    "Books": (7.0, 49.0),
    "Grocery": (2.0, 39.0),
}
BRANDS = ("Northwind", "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Soylent", "Hooli")
ADJECTIVES = ("Classic", "Smart", "Eco", "Ultra", "Compact", "Deluxe", "Pro", "Everyday", "Premium", "Travel")
NOUNS = {
    "Electronics": ("Headphones", "Speaker", "Charger", "Monitor", "Keyboard", "Camera"),
    "Home": ("Lamp", "Blanket", "Mug", "Vase", "Pillow", "Kettle"),
    "Apparel": ("Jacket", "Sneakers", "T-Shirt", "Scarf", "Jeans", "Hoodie"),
    "Beauty": ("Serum", "Lipstick", "Shampoo", "Cream", "Perfume", "Mask"),
    "Sports": ("Yoga Mat", "Bike Helmet", "Dumbbells", "Tent", "Racket", "Backpack"),
    "Toys": ("Puzzle", "Robot", "Doll", "Blocks", "Kite", "Board Game"),
    "Books": ("Cookbook", "Novel", "Atlas", "Biography", "Guide", "Comic"),
    "Grocery": ("Coffee", "Tea", "Olive Oil", "Chocolate", "Granola", "Honey"),
}
COLORS = ("black", "white", "red", "blue", "green", "grey")
SIZES = ("S", "M", "L", "XL", "one-size")

FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Frances", "Dennis",
    "Radia", "Tim", "Hedy", "John", "Katherine", "Guido", "Anita", "Bjarne", "Joan", "Niklaus",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Torvalds", "Allen",
    "Ritchie", "Perlman", "Berners-Lee", "Lamarr", "McCarthy", "Johnson", "van Rossum", "Borg", "Stroustrup",
    "Clarke", "Wirth",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "mail.test", "inbox.test", "corp.test")
# Countries whose postal codes are all digits: the drift step stores them as strings later.
CITIES = {
    "US": ("New York", "Austin", "Boston", "Seattle", "Denver"),
    "DE": ("Berlin", "Hamburg", "Munich", "Cologne", "Dresden"),
    "FR": ("Paris", "Lyon", "Nantes", "Lille", "Nice"),
    "ES": ("Madrid", "Valencia", "Seville", "Bilbao", "Malaga"),
    "IT": ("Rome", "Milan", "Turin", "Naples", "Bologna"),
    "AU": ("Sydney", "Perth", "Hobart", "Darwin", "Cairns"),
}
POSTAL_CODE_DIGITS = {"US": 5, "DE": 5, "FR": 5, "ES": 5, "IT": 5, "AU": 4}
CITY_COORDINATES = {
    "US": (39.8, -98.6),
    "DE": (51.2, 10.4),
    "FR": (46.6, 2.2),
    "ES": (40.4, -3.7),
    "IT": (41.9, 12.6),
    "AU": (-25.3, 133.8),
}
SEGMENTS = ("consumer", "business")
LOYALTY_TIERS = ("bronze", "silver", "gold", "platinum")
CONTACT_CHANNELS = ("email", "sms", "push")

# Marketing: each campaign runs on one channel, which fixes its UTM source and medium.
CAMPAIGN_CHANNELS = {
    "google_ads": ("google", "cpc", (80.0, 300.0)),
    "meta_ads": ("facebook", "paid_social", (50.0, 250.0)),
    "tiktok_ads": ("tiktok", "paid_social", (30.0, 200.0)),
    "email": ("newsletter", "email", (5.0, 20.0)),
    "affiliate": ("partner_network", "affiliate", (20.0, 100.0)),
}
CAMPAIGN_THEMES = ("spring_sale", "back_to_school", "black_friday", "new_arrivals", "loyalty_boost", "clearance", "brand_launch")
CAMPAIGN_OBJECTIVES = ("awareness", "traffic", "conversions")
SOCIAL_PLATFORMS = ("instagram", "facebook", "tiktok", "x", "linkedin")
SOCIAL_CONTENT_TYPES = ("image", "video", "reel", "story", "text")

# The web funnel, GA style: each step is an event name; a session reaches a prefix of it.
FUNNEL_STEPS = ("page_view", "view_item", "add_to_cart", "begin_checkout", "purchase")
FUNNEL_CONTINUE = (0.65, 0.40, 0.55, 0.60)  # chance to go from each step to the next
DEVICES = ("desktop", "mobile", "tablet")
LANDING_PAGES = ("/", "/sale", "/new", "/category/electronics", "/category/home", "/blog/gift-guide")
REFERRERS = ("google.com", "facebook.com", "tiktok.com", "newsletter", "partner.example")

SALES_CHANNELS = ("web", "mobile_app", "marketplace", "store")
OFFLINE_SALES_CHANNELS = ("marketplace", "store")
SHIPPING_METHODS = ("standard", "express")

# Order lifecycle: placed -> paid -> shipped -> delivered, with cancellation and refund exits.
ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "refunded")
TERMINAL_STATUSES = ("cancelled", "refunded")
REVENUE_STATUSES = ("paid", "shipped", "delivered")

__all__ = [name for name in dir() if name.isupper()]
