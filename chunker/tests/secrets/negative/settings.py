import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher"]
PASSWORD_RESET_TIMEOUT = 259200
TOKEN_EXPIRY_SECONDS = 3600
API_KEY_HEADER = "X-Api-Key"
SECRET_KEY_FALLBACKS = []
password_field = "user_password"
token_type = "bearer_token"
