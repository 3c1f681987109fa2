from django.urls import path

from . import views

urlpatterns = [
    path("aggregate/<str:name>/", views.aggregate, name="aggregate"),
]
