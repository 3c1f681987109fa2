from django.urls import path, re_path

from . import views

urlpatterns = [
    # Also without the slash: DEMO_UPSTREAM_URL + "/delay?ms=D" must not redirect.
    re_path(r"^delay/?$", views.delay, name="demo-delay"),
    path("slow-sql/", views.slow_sql, name="demo-slow-sql"),
    path("fan-out/", views.fan_out, name="demo-fan-out"),
]
