"""A Flask app that stores an order and publishes its receipt job in one transaction.

Run it with ``flask --app examples.flask_app run`` and a worker with
``conveyor consume --app examples.flask_app:app``; ``CONVEYOR_URL`` picks the database.
"""

from __future__ import annotations

import os

from conveyor import Conveyor
from conveyor.integrations.flask import FlaskConveyor
from flask import Flask, Response, jsonify, request
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///shop.db"))
engine = create_engine(app.url)  # the application's own engine, on the same database
metadata = MetaData()
orders = Table(
    "example_flask_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(200), nullable=False),
)
metadata.create_all(engine)
sent: list[int] = []


@app.handler("send_receipt", queue="mail")
def send_receipt(order_id: int) -> None:
    sent.append(order_id)


class Refused(Exception):
    pass


conveyor = FlaskConveyor()


def create_app() -> Flask:
    flask_app = Flask(__name__)
    conveyor.init_app(flask_app, app)  # also mounts GET /jobs/<id>
    _ = app.store  # open the store (creating its tables) before the first request

    @flask_app.post("/orders")
    def place_order() -> Response | tuple[Response, int]:
        form = request.get_json()
        try:
            with engine.begin() as connection:  # the order and its job commit together
                order_id = connection.execute(
                    insert(orders).values(email=form["email"]).returning(orders.c.id)
                ).scalar_one()
                job = conveyor.publish(
                    "send_receipt", {"order_id": order_id}, connection=connection
                )
                if "@" not in form["email"]:
                    raise Refused("email needs an @")
        except Refused as error:
            return jsonify({"detail": str(error)}), 422
        return conveyor.accepted(job)

    return flask_app
