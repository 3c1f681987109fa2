"""Root URLconf."""

from django.conf import settings
from django.urls import include, path

urlpatterns = [
    path("", include("project.health.urls")),
    path("", include("project.observability.urls")),
    path("api/", include("project.aggregation.urls")),
]
if settings.DEMO_ENDPOINTS:
    urlpatterns += [
        path("demo/", include("project.demo.urls")),
        path("example/", include("project.example.urls")),
    ]

handler400 = "project.http.handlers.bad_request"
handler404 = "project.http.handlers.not_found"
handler500 = "project.http.handlers.server_error"
