import csv
import io

import config
from flask import (
    Flask,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash

from inventory import __version__
from inventory.db import close_db, get_db, init_db


def create_app():
    app = Flask(__name__)
    app.config.from_object(config)
    app.teardown_appcontext(close_db)

    @app.cli.command("init-db")
    def init_db_command():
        init_db()
        print("Initialized the database.")

    @app.get("/health")
    def health():
        get_db().execute("SELECT 1").fetchone()
        return {"status": "ok", "version": __version__}

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "POST":
            row = get_db().execute(
                "SELECT * FROM users WHERE username = ?", (request.form["username"],)
            ).fetchone()
            if row and check_password_hash(row["password_hash"], request.form["password"]):
                session.clear()
                session["user_id"] = row["id"]
                return redirect(url_for("index"))
            flash("Invalid username or password.")
        return render_template("login.html")

    @app.get("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    def index():
        if "user_id" not in session:
            return redirect(url_for("login"))
        q = request.args.get("q", "")
        items = get_db().execute(
            "SELECT items.*, locations.name AS location FROM items"
            " LEFT JOIN locations ON locations.id = items.location_id"
            " WHERE items.name LIKE ? OR items.sku LIKE ? ORDER BY items.sku",
            (f"%{q}%", f"%{q}%"),
        ).fetchall()
        return render_template("index.html", items=items, q=q)

    @app.get("/api/v1/items")
    def api_items():
        if "user_id" not in session:
            abort(401)
        rows = get_db().execute("SELECT sku, name, quantity FROM items").fetchall()
        return {"items": [dict(r) for r in rows]}

    @app.get("/export.csv")
    def export_csv():
        if "user_id" not in session:
            abort(401)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["sku", "name", "quantity"])
        for r in get_db().execute("SELECT sku, name, quantity FROM items"):
            writer.writerow([r["sku"], r["name"], r["quantity"]])
        return Response(out.getvalue(), mimetype="text/csv")

    return app
