"""audit-web's URLs: the token pages (web/views.py) and the console.

A session's pages are under /sessions/ID, or /bastions/B/sessions/ID when
the console reads the fleet store (a session is its bastion's and its id).
"""

from __future__ import annotations

from typing import Any

from django.urls import path

from web import assets, console_views, downloads, live, views

# Each page of one session, below its path.
SESSION_PAGES: tuple[tuple[str, Any, dict[str, str]], ...] = (
    ("", console_views.session_page, {}),
    ("/feed", console_views.feed, {}),
    ("/terminate", console_views.terminate, {}),
    ("/cast", downloads.cast, {}),
    ("/live", live.stream, {}),
    ("/commands.json", downloads.commands, {"fmt": "json"}),
    ("/commands.csv", downloads.commands, {"fmt": "csv"}),
)

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
    path("static/<str:name>", assets.asset),
]
for tail, view, extra in SESSION_PAGES:
    urlpatterns += [
        path(f"sessions/<str:sid>{tail}", view, extra),
        path(f"bastions/<str:bastion>/sessions/<str:sid>{tail}", view, extra),
    ]
