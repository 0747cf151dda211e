"""The route table: every path the gateway answers, and who answers it."""

from __future__ import annotations

import functools

from aiohttp import web

from sync_gateway.config import Settings, route_name
from sync_gateway.web import views_ops
from sync_gateway.web.views_routes import RouteViews
from sync_gateway.web.views_theeye import TheEyeViews

THEEYE_CREATE = (
    "/{customer}/task/{task}/job",
    "/{customer}/task/{task}/secret/{secret}/job",
    "/task/{task}/job",
    "/task/{task}/secret/{secret}/job",
)
THEEYE_RESULT = ("/job/{job}/result", "/job/{job}/secret/{secret}/result")
ROUTE_RESULT = "/jobs/{adapter}/{job}/result"


def add_routes(
    router: web.UrlDispatcher, settings: Settings, theeye: TheEyeViews, routes: RouteViews
) -> None:
    """TheEye's routes are the views' own bound methods: no wrapper frame per waiting client."""
    for path in THEEYE_CREATE:
        router.add_post(path, theeye.create)
    for method in ("GET", "POST"):
        for path in THEEYE_RESULT:
            router.add_route(method, path, theeye.result)
        router.add_route(method, ROUTE_RESULT, routes.result)
    for index, configured in enumerate(settings.routes):
        handler = functools.partial(routes.create, name=route_name(configured, index))
        router.add_route(configured.method, configured.path, handler)
    router.add_get("/healthz", views_ops.healthz)
    router.add_get("/readyz", views_ops.readyz)
    router.add_get("/metrics", views_ops.metrics_view)
    router.add_get("/openapi.json", views_ops.openapi)
