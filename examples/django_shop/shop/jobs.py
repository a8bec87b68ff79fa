"""The project's Conveyor app: jobs in the default database, handlers using the ORM."""

from conveyor import Conveyor
from conveyor.integrations.django import close_connections_around_jobs, database_url
from django.conf import settings

app = close_connections_around_jobs(
    Conveyor(database_url(), table_prefix=settings.SHOP_TABLE_PREFIX or "conveyor_")
)


@app.handler("shop.send_receipt", queue="mail")
def send_receipt(order_id: int) -> None:
    from shop.models import Order

    Order.objects.filter(pk=order_id).update(receipt_sent=True)
