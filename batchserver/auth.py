"""Bearer API keys for /v1/."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions

from batchserver.models import ApiKey, Project
from batchserver.services import api_key_find


@dataclass(frozen=True)
class Caller:
    """request.user on /v1/: the project a key acts for."""

    project: Project
    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def project_id(self) -> int:
        return self.project.pk


def _masked(raw: str) -> str:
    return f"{raw[:6]}{'*' * 6}{raw[-4:]}" if len(raw) > 12 else "*" * len(raw)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").strip()
        if not header:
            return None  # → 401 "You didn't provide an API key"
        scheme, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip()
        if scheme.lower() != "bearer" or not raw_key:
            raise exceptions.AuthenticationFailed(
                "The Authorization header must be 'Bearer YOUR_KEY'. Create a key with "
                "`python manage.py apikey create`."
            )
        key = api_key_find(raw_key=raw_key)
        if key is None:
            raise exceptions.AuthenticationFailed(
                f"Incorrect API key provided: {_masked(raw_key)}. Keys are created with "
                "`python manage.py apikey create` or in the admin; revoked keys stop working."
            )
        return Caller(project=key.project, api_key=key), key

    def authenticate_header(self, request) -> str:
        return self.keyword
