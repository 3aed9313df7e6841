"""Login form handler: reads a password from the form and checks it against the stored hash."""
from flask import Flask, request, render_template, redirect, flash
from werkzeug.security import check_password_hash

from .models import User

app = Flask(__name__)


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    user = User.query.filter_by(username=username).first()
    if user is None or not check_password_hash(user.password_hash, password):
        flash("Invalid username or password")
        return redirect("/login")
    token = create_session_token(user)
    response = redirect("/")
    response.set_cookie("session", token, httponly=True, secure=True)
    return response


def reset_password(user, new_password: str, confirm_password: str) -> None:
    if new_password != confirm_password:
        raise ValueError("passwords do not match")
    if len(new_password) < 12:
        raise ValueError("password must be at least 12 characters")
    user.set_password(new_password)
    password_reset_token = None
    api_key = os.environ["API_KEY"]
    secret = settings.SECRET_KEY
