"""The "Security (production)" settings come from the environment, strictly parsed: a bad value stops the process
with a message that says what to write instead. And BATCHSERVER_METRICS_ALLOW="" means no network at all (what a
deployment behind a local reverse proxy needs: there every client comes from 127.0.0.1). Settings act when they
are imported, so each case is a new Python process."""

from __future__ import annotations

import json

import pytest

from tests.stack import finished, settings_process

SHOW = """
import json
from django.conf import settings
names = ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
         "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "ALLOWED_HOSTS",
         "CSRF_TRUSTED_ORIGINS"]
print(json.dumps({name: getattr(settings, name) for name in names}))
"""

PRODUCTION = {
    "DJANGO_ALLOWED_HOSTS": "batch.example.com, admin.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://batch.example.com",
    "DJANGO_SESSION_COOKIE_SECURE": "true",
    "DJANGO_CSRF_COOKIE_SECURE": "yes",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "on",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
}


def settings_with(tmp_path, **env: str) -> dict:
    return json.loads(finished(settings_process(SHOW, tmp_path, **env)))


def test_defaults_serve_plain_http_on_localhost(tmp_path):
    assert settings_with(tmp_path) == {
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_SSL_REDIRECT": False,
        "ALLOWED_HOSTS": ["*"],
        "CSRF_TRUSTED_ORIGINS": [],
    }


def test_production_values_from_the_environment(tmp_path):
    assert settings_with(tmp_path, **PRODUCTION) == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": True,
        "ALLOWED_HOSTS": ["batch.example.com", "admin.example.com"],
        "CSRF_TRUSTED_ORIGINS": ["https://batch.example.com"],
    }


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("DJANGO_SESSION_COOKIE_SECURE", "maybe", "is not a boolean: use one of 1/0, true/false"),
        ("DJANGO_CSRF_COOKIE_SECURE", "secure", "is not a boolean"),
        ("DJANGO_SECURE_HSTS_SECONDS", "1y", "is not an integer"),
        ("DJANGO_SECURE_HSTS_SECONDS", "-1", "is negative: use 0 (no HSTS)"),
        ("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", "2", "is not a boolean"),
        ("DJANGO_SECURE_HSTS_PRELOAD", "preload", "is not a boolean"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto", "use e.g. HTTP_X_FORWARDED_PROTO"),
        ("DJANGO_SECURE_SSL_REDIRECT", "always", "is not a boolean"),
        ("BATCHSERVER_ENQUEUED_TOKENS_LIMIT", "2M", "is not a whole number: give one, or `none` for no limit"),
        ("BATCHSERVER_MAX_STORED_BYTES", "-5", "must be at least 0"),
        ("BATCHSERVER_RATE_LIMIT_RPM", "0", "must be at least 1 (or `none` for no limit)"),
    ],
)
def test_a_bad_value_stops_the_process_and_says_what_to_write(tmp_path, name, value, message):
    error = finished(settings_process(SHOW, tmp_path, **{name: value}), ok=False)
    assert "ImproperlyConfigured" in error and f"{name}={value!r}" in error and message in error


# The behaviour these settings give, through the whole middleware stack: HTTP is redirected to HTTPS except for
# probes and scrapers, the proxy's header counts as HTTPS, HSTS is sent, and cookies are marked Secure.
BEHAVIOUR = """
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
client = Client(HTTP_HOST="batch.example.com")
plain = client.get("/v1/models")
proxied = client.get("/v1/models", HTTP_X_FORWARDED_PROTO="https")
from django.middleware.csrf import get_token
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
request = HttpRequest()
get_token(request)
response = HttpResponse()
CsrfViewMiddleware(lambda r: response).process_response(request, response)
print(json.dumps({
    "plain": [plain.status_code, plain.headers.get("Location")],
    "healthz": client.get("/healthz").status_code,
    "proxied": [proxied.status_code, proxied.headers.get("Strict-Transport-Security")],
    "csrf_cookie_secure": bool(response.cookies["csrftoken"]["secure"]),
}))
"""


def test_production_settings_redirect_to_https_send_hsts_and_secure_cookies(tmp_path):
    result = json.loads(finished(settings_process(BEHAVIOUR, tmp_path, **PRODUCTION)))
    assert result["plain"] == [301, "https://batch.example.com/v1/models"]
    assert result["healthz"] == 200  # probes reach the server directly over HTTP
    assert result["proxied"] == [401, "max-age=31536000; includeSubDomains; preload"]
    assert result["csrf_cookie_secure"] is True


METRICS = """
import json
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
client = Client()
print(json.dumps({
    "networks": [str(net) for net in settings.BATCHSERVER_METRICS_NETWORKS],
    "loopback": client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code,
    "ipv6_loopback": client.get("/metrics", REMOTE_ADDR="::1").status_code,
    "token": client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer scrape-me").status_code,
}))
"""


def test_empty_metrics_allow_means_no_network_only_the_token(tmp_path):
    result = json.loads(
        finished(
            settings_process(METRICS, tmp_path, BATCHSERVER_METRICS_ALLOW="", BATCHSERVER_METRICS_TOKEN="scrape-me")
        )
    )
    assert result == {"networks": [], "loopback": 403, "ipv6_loopback": 403, "token": 200}


def test_metrics_allow_default_is_loopback(tmp_path):
    result = json.loads(finished(settings_process(METRICS, tmp_path)))
    assert result["networks"] == ["127.0.0.0/8", "::1/128"] and result["loopback"] == 200
