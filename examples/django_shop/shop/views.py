"""The order endpoint: the order row and its receipt job commit together, or neither."""

import json

from conveyor import JobNotFound
from conveyor.integrations.django import get_app, publish
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from shop.models import Order


class Refused(Exception):
    pass


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    form = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(email=form["email"])
            job = publish("shop.send_receipt", {"order_id": order.pk})
            if "@" not in order.email:  # fails after the publish: both roll back
                raise Refused("email needs an @")
    except Refused as error:
        return JsonResponse({"detail": str(error)}, status=422)
    response = JsonResponse({"id": job.id, "state": job.state}, status=202)
    response["Location"] = request.build_absolute_uri(
        reverse("job_status", args=[job.id])
    )
    return response


@require_GET
def job_status(request: HttpRequest, job_id: str) -> HttpResponse:
    try:
        job = get_app().get(job_id)
    except JobNotFound as error:
        return JsonResponse({"detail": str(error)}, status=404)
    return JsonResponse({"id": job.id, "state": job.state})
