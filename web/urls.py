"""audit-web's URLs: the token pages (web/views.py) and the console."""

from __future__ import annotations

from django.urls import path

from web import assets, console_views, downloads, live, views

urlpatterns = [
    path("", views.hosts),
    path("sign-in", views.sign_in),
    path("connect", views.connect),
    path("sign-out", views.sign_out),
    path("sessions", console_views.sessions),
    path("live", console_views.live),
    path("search", console_views.search),
    path("search.csv", downloads.search_csv),
    path("access", console_views.access_log),
    path("sessions/<str:sid>", console_views.session_page),
    path("sessions/<str:sid>/feed", console_views.feed),
    path("sessions/<str:sid>/terminate", console_views.terminate),
    path("sessions/<str:sid>/cast", downloads.cast),
    path("sessions/<str:sid>/live", live.stream),
    path("sessions/<str:sid>/commands.json", downloads.commands, {"fmt": "json"}),
    path("sessions/<str:sid>/commands.csv", downloads.commands, {"fmt": "csv"}),
    path("static/<str:name>", assets.asset),
]
