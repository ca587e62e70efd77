"""`manage.py apikey create` names the key's project: an existing one (--project) or a new one (--new-project),
never one guessed from the key's name."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def apikey_create(*args: str) -> str:
    out = io.StringIO()
    call_command("apikey", "create", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


@pytest.mark.django_db
def test_new_project_creates_the_project_with_the_key():
    from batchserver.services import api_key_find

    raw = apikey_create("--name", "web-app", "--new-project", "team-web")
    assert api_key_find(raw_key=raw).project.name == "team-web"


@pytest.mark.django_db
def test_project_adds_a_key_to_an_existing_project():
    from batchserver.models import Project
    from batchserver.services import api_key_find

    team = Project.objects.create(name="team a")
    raw = apikey_create("--name", "second", "--project", "team a")
    assert api_key_find(raw_key=raw).project_id == team.pk


@pytest.mark.django_db
def test_a_key_named_like_a_project_does_not_join_it():
    from batchserver.models import ApiKey, Project

    Project.objects.create(name="team-a")
    with pytest.raises(CommandError, match="one of the arguments --project --new-project is required"):
        apikey_create("--name", "team-a")
    assert not ApiKey.objects.filter(name="team-a").exists()  # (other tests' keys may be in the database)


@pytest.mark.django_db
def test_project_that_does_not_exist_is_refused_naming_new_project():
    from batchserver.models import ApiKey, Project

    with pytest.raises(CommandError, match=r"No project named 'team a'.*--new-project 'team a' instead"):
        apikey_create("--name", "k", "--project", "team a")
    assert not ApiKey.objects.filter(name="k").exists() and not Project.objects.filter(name="team a").exists()


@pytest.mark.django_db
def test_new_project_that_exists_is_refused_naming_project():
    from batchserver.models import ApiKey, Project

    Project.objects.create(name="team-a")
    with pytest.raises(CommandError, match="'team-a' exists already. To add the key to it, use --project team-a"):
        apikey_create("--name", "k", "--new-project", "team-a")
    assert not ApiKey.objects.filter(name="k").exists()


@pytest.mark.django_db
def test_both_or_empty_names_are_refused():
    with pytest.raises(CommandError, match="not allowed with argument"):
        apikey_create("--name", "k", "--project", "a", "--new-project", "b")
    with pytest.raises(CommandError, match="a name may not be empty"):
        apikey_create("--name", "k", "--new-project", " ")
