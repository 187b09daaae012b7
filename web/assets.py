"""The console's own script and style, and asciinema-player's bundle, by name.

No static-files app: five files, served from where they are. The player is
installed by the build from the npm registry (web/player/package.json and
its lock file; `make web` runs `npm ci` there); it is never in the repo.
Every page's Content-Security-Policy (web/site.py) allows scripts from here
only, so these are the only scripts a page runs.
"""

from __future__ import annotations

from pathlib import Path

from django.http import FileResponse, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

HERE = Path(__file__).parent
PLAYER_DIR = HERE / "player" / "node_modules" / "asciinema-player" / "dist" / "bundle"
ASSETS = {
    "console.js": (HERE / "static" / "console.js", "text/javascript"),
    "console.css": (HERE / "static" / "console.css", "text/css"),
    "token.js": (HERE / "static" / "token.js", "text/javascript"),
    "player.js": (PLAYER_DIR / "asciinema-player.min.js", "text/javascript"),
    "player.css": (PLAYER_DIR / "asciinema-player.css", "text/css"),
}
MAX_AGE_S = 3600


@require_GET
def asset(request: HttpRequest, name: str) -> HttpResponse:
    found = ASSETS.get(name)
    if found is None:
        return HttpResponse("no such file\n", status=404, content_type="text/plain")
    path, content_type = found
    try:
        f = open(path, "rb")  # noqa: SIM115 (FileResponse closes it)
    except FileNotFoundError:
        return HttpResponse(
            f"{path.name} is not installed: run `npm ci` in {path.parents[3]}"
            " (make web does)\n",
            status=404,
            content_type="text/plain",
        )
    response = FileResponse(f, content_type=content_type)
    response["Cache-Control"] = f"private, max-age={MAX_AGE_S}"
    return response
