"""The start page: sends each user to the page of their role."""

from __future__ import annotations

from flask import Blueprint, g, render_template

bp = Blueprint("home", __name__)


@bp.get("/")
def index() -> str:
    return render_template("home.html", user=g.get("user"))
