"""Settings of the example shop: PostgreSQL, and Conveyor's app named in ``CONVEYOR``."""

import os

SECRET_KEY = "example-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "shop_site.urls"
USE_TZ = True
INSTALLED_APPS = ["conveyor.integrations.django", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SHOP_DB_NAME", "test"),
        "USER": os.environ.get("SHOP_DB_USER", "postgres"),
        "HOST": os.environ.get("SHOP_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("SHOP_DB_PORT", "5432"),
    }
}
# Conveyor: the app with the project's handlers (manage.py conveyor_consume runs it).
CONVEYOR = {"APP": "shop.jobs:app"}
# Lets the tests keep their tables apart on a shared server; empty in a real project.
SHOP_TABLE_PREFIX = os.environ.get("SHOP_TABLE_PREFIX", "")
