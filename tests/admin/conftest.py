"""Fixtures of the admin (operator console) tests: staff users with and without permissions, and builders of
projects, files, batches and requests written straight to the test database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_batch, request_json, write_file  # noqa: F401 - used by the admin tests


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    """The Django test client renders pages without `collectstatic`: serve static names unhashed. (The browser
    tests run the real manifest storage, after collectstatic, in their own server.)"""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing folder


@pytest.fixture
def project(db):
    from batchserver.models import Project

    return Project.objects.create(name="team-a")


@pytest.fixture
def other_project(db):
    from batchserver.models import Project

    return Project.objects.create(name="team-b")


def make_user(django_user_model, username: str, *, staff: bool = True, perms: list[str] = ()):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username=username, password="pw-" + username, is_staff=staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def login(user):
    """A Django test client logged in as this user. (The suite's `client` fixture is the OpenAI SDK.)"""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


VIEW_PERMS = [
    "batches_api.view_batch",
    "files_api.view_file",
    "batchserver.view_apikey",
    "batchserver.view_project",
    "batches_api.view_worker",
]


@pytest.fixture
def viewer_client(db, django_user_model):
    """A staff user who may view everything but change or delete nothing."""
    return login(make_user(django_user_model, "viewer", perms=VIEW_PERMS))
