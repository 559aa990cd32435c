#!/usr/bin/env python3
"""Seed the demo app in /srv/www/inventory: its .env and a small, plausible SQLite database.

Run by build.sh after the app's files are copied in; leaves an existing .env and database
alone, so running it again changes nothing. Secrets are random per build, never in git.
"""

from __future__ import annotations

import secrets
import sqlite3
import sys
from pathlib import Path

LOCATIONS = ["A-01", "A-02", "A-03", "B-01", "B-02", "B-03", "C-01", "C-02", "Dock", "Returns"]
ITEMS = [
    ("Hex bolt M8x40, zinc", "bolt"), ("Hex bolt M10x60, zinc", "bolt"),
    ("Hex nut M8", "nut"), ("Hex nut M10", "nut"), ("Washer M8", "washer"),
    ("Wood screw 4x40", "screw"), ("Wood screw 5x60", "screw"), ("Drywall screw 3.5x35", "screw"),
    ("Door hinge 100mm, steel", "hinge"), ("Cabinet hinge 35mm", "hinge"),
    ("Cable tie 200mm (100 pcs)", "cable"), ("Cable tie 300mm (100 pcs)", "cable"),
    ("Duct tape 50mm x 50m", "tape"), ("Masking tape 25mm", "tape"),
    ("Euro pallet 1200x800", "pallet"), ("Stretch film 500mm", "film"),
    ("Safety gloves, size 9", "ppe"), ("Safety gloves, size 10", "ppe"),
    ("Ear plugs (200 pairs)", "ppe"), ("Packing box 400x300x200", "box"),
    ("Packing box 600x400x400", "box"), ("Label roll 100x150", "label"),
    ("Extension cord 10m", "electric"), ("LED tube 120cm", "electric"),
    ("Wall plug 8mm (100 pcs)", "plug"), ("Threaded rod M8 1m", "rod"),
    ("Angle bracket 60mm", "bracket"), ("Shelf bracket 200mm", "bracket"),
    ("Silicone sealant, clear", "sealant"), ("PU foam 750ml", "foam"),
]
USERS = [("admin", 1), ("m.keller", 0), ("j.novak", 0), ("warehouse", 0), ("s.brandt", 1)]


def write_env(app: Path) -> None:
    env = app / ".env"
    if env.exists():
        return
    env.write_text(
        "# inventory settings - do not commit this file\n"
        f"SECRET_KEY={secrets.token_hex(32)}\n"
        f"DATABASE={app}/instance/inventory.db\n"
        "MAIL_SERVER=smtp.sendgrid.net\n"
        "MAIL_PORT=587\n"
        "MAIL_USERNAME=apikey\n"
        f"MAIL_PASSWORD=SG.{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}\n"
        "ADMIN_EMAIL=it-ops@kestrel-logistics.net\n"
    )


def seed_db(app: Path) -> None:
    sys.path.insert(0, str(app))
    from inventory.db import SCHEMA
    from werkzeug.security import generate_password_hash

    db_path = app / "instance" / "inventory.db"
    if db_path.exists():
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    rnd = secrets.SystemRandom()
    con = sqlite3.connect(db_path)
    with con:
        con.executescript(SCHEMA)
        for name, is_admin in USERS:
            pw = generate_password_hash(secrets.token_urlsafe(12))
            con.execute("INSERT INTO users (username, password_hash, is_admin) VALUES (?, ?, ?)",
                        (name, pw, is_admin))
        con.executemany("INSERT INTO locations (name) VALUES (?)", [(n,) for n in LOCATIONS])
        for i, (name, _) in enumerate(ITEMS):
            con.execute(
                "INSERT INTO items (sku, name, location_id, quantity, updated_at)"
                " VALUES (?, ?, ?, ?, datetime('now', ?))",
                (f"SKU-{10040 + i * 7}", name, rnd.randint(1, len(LOCATIONS)),
                 rnd.randint(0, 900), f"-{rnd.randint(1, 200)} days"))
        for _ in range(240):
            con.execute(
                "INSERT INTO moves (item_id, from_location, to_location, quantity, moved_by,"
                " moved_at) VALUES (?, ?, ?, ?, ?, datetime('now', ?))",
                (rnd.randint(1, len(ITEMS)), rnd.randint(1, len(LOCATIONS)),
                 rnd.randint(1, len(LOCATIONS)), rnd.randint(1, 60), rnd.randint(1, len(USERS)),
                 f"-{rnd.randint(1, 230 * 24)} hours"))
    con.close()


def main() -> None:
    app = Path(sys.argv[1] if len(sys.argv) > 1 else "/srv/www/inventory")
    write_env(app)
    seed_db(app)


if __name__ == "__main__":
    main()
