"""API keys in the console: created through batchserver.services.api_key_create and shown exactly once, listed
by name, owner and use, revoked one by one or many at once. The key is never in any other page. Its project is
always chosen: a new one typed in, or an existing one picked by staff with the permission to."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

LIST = "/admin/batchserver/apikey/"
ADD = "/admin/batchserver/apikey/add/"


def key_page(key) -> str:
    return reverse("admin:batchserver_apikey_change", args=[quote(key.pk)])


def create(client, name="ci-key", **owner):
    """owner: new_project="name" or project=<pk of an existing project>."""
    response = client.post(ADD, {"name": name, **(owner or {"new_project": "team-ci"}), "_save": "Save"})
    assert response.status_code == 200, response.content[:2000]
    html = response.content.decode()
    raw = html.split('id="bs-new-key" value="')[1].split('"')[0]
    return response, raw


def test_create_shows_the_key_once_and_stores_only_its_hash(admin_client, db):
    from batchserver.models import ApiKey, hash_key
    from batchserver.services import api_key_find

    response, raw = create(admin_client)
    assert raw.startswith("sk-bs-") and len(raw) > 40
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    html = response.content.decode()
    assert "shown only this once" in html and 'data-bs-copy="bs-new-key"' in html
    key = ApiKey.objects.get(name="ci-key")
    assert key.project.name == "team-ci" and key.key_hash == hash_key(raw) and key.prefix == raw[:12]
    assert raw not in str(ApiKey.objects.filter(pk=key.pk).values().get())
    assert api_key_find(raw_key=raw).pk == key.pk  # it works for the API

    # Never again: not in any other page, nor in the session or the messages.
    for url in (
        LIST,
        key_page(key),
        "/admin/",
        reverse("admin:batchserver_project_changelist"),
        reverse("admin:batchserver_apikey_history", args=[quote(key.pk)]),
    ):
        html = admin_client.get(url).content.decode()
        assert raw not in html and raw[12:] not in html, url
    assert raw not in str(dict(admin_client.session))
    from django.contrib.admin.models import LogEntry

    assert not any(raw in (e.object_repr + e.change_message) for e in LogEntry.objects.all())


def test_the_project_is_never_guessed_from_the_keys_name(admin_client, project):
    from batchserver.models import ApiKey

    # A key named like another team's project does not join it.
    response = admin_client.post(ADD, {"name": project.name, "_save": "Save"})
    html = response.content.decode()
    assert response.status_code == 200 and "bs-new-key" not in html
    assert "Choose an existing project or type the name of a new one" in html
    assert not ApiKey.objects.exists()


def test_create_for_an_existing_project_picked_from_the_list(admin_client, project, other_project):
    from batchserver.models import ApiKey

    html = admin_client.get(ADD).content.decode()
    select = html[html.index('name="project"') :].split("</select>")[0]
    assert f'value="{project.pk}">team-a<' in select and f'value="{other_project.pk}">team-b<' in select
    create(admin_client, name="second", project=project.pk)
    assert ApiKey.objects.get(name="second").project_id == project.pk


def test_a_new_project_may_not_take_an_existing_name(admin_client, project):
    from batchserver.models import ApiKey, Project

    response = admin_client.post(ADD, {"name": "k", "new_project": project.name, "_save": "Save"})
    html = response.content.decode()
    assert "bs-new-key" not in html and "exists already: choose it under" in html
    assert not ApiKey.objects.exists() and Project.objects.count() == 1


def test_existing_and_new_project_together_are_refused(admin_client, project):
    from batchserver.models import ApiKey

    response = admin_client.post(ADD, {"name": "k", "project": project.pk, "new_project": "fresh", "_save": "Save"})
    assert "one of the two" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_keys_for_existing_projects_need_their_own_named_permission(project, django_user_model):
    from django.contrib.auth.models import Permission

    from batchserver.models import PERM_ADD_TO_EXISTING_PROJECT, ApiKey
    from tests.admin.conftest import login, make_user

    permission = Permission.objects.get(codename=PERM_ADD_TO_EXISTING_PROJECT.split(".")[1])
    assert permission.name == "Can create API keys for existing projects"
    user = make_user(django_user_model, "key-maker", perms=["batchserver.add_apikey", "batchserver.view_apikey"])
    client = login(user)
    html = client.get(ADD).content.decode()
    assert 'name="new_project"' in html and 'name="project"' not in html and "team-a" not in html
    assert client.post(ADD, {"name": "k", "project": project.pk, "_save": "Save"}).status_code == 403
    refused = client.post(ADD, {"name": "k", "new_project": project.name, "_save": "Save"}).content.decode()
    assert "Can create API keys for existing projects" in refused and "bs-new-key" not in refused
    assert not ApiKey.objects.filter(project=project).exists()
    create(client, name="own", new_project="key-makers")  # a new project owns nothing: add_apikey is enough
    assert ApiKey.objects.get(name="own").project.name == "key-makers"

    user.user_permissions.add(permission)
    client = login(django_user_model.objects.get(pk=user.pk))  # permissions are cached on the user object
    assert 'name="project"' in client.get(ADD).content.decode()
    create(client, name="joined", project=project.pk)
    assert ApiKey.objects.get(name="joined").project_id == project.pk


def test_create_needs_a_name(admin_client, db):
    response = admin_client.post(ADD, {"name": "", "new_project": "x", "_save": "Save"})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert "bs-new-key" not in response.content.decode()


def test_list_shows_name_owner_created_last_used_and_state(admin_client, db):
    from batchserver.services import api_key_create, api_key_revoke

    used, _ = api_key_create(name="used-key", new_project="owners")
    used.last_used_at = timezone.now() - timedelta(minutes=5)
    used.save()
    old, _ = api_key_create(name="old-key", project=used.project)
    api_key_revoke(key=old)
    html = admin_client.get(LIST).content.decode()
    row = html[html.index(">used-key<") :].split("</tr>")[0]
    assert used.prefix + "…" in row and "owners" in row and "bs-key-active" in row
    assert "field-last_used_at" in row and "-" not in row.split("field-last_used_at")[1][:12]
    old_row = html[html.index(">old-key<") :].split("</tr>")[0]
    assert "bs-key-revoked" in old_row
    active_only = admin_client.get(LIST, {"state": "active"}).content.decode()
    assert ">used-key<" in active_only and ">old-key<" not in active_only


def test_revoke_button_and_action(admin_client, db):
    from batchserver.models import ApiKey
    from batchserver.services import api_key_create

    one, _ = api_key_create(name="one", new_project="p")
    two, _ = api_key_create(name="two", project=one.project)
    three, _ = api_key_create(name="three", project=one.project)
    assert 'id="bs-revoke"' in admin_client.get(key_page(one)).content.decode()
    assert admin_client.get(reverse("admin:batchserver_apikey_revoke", args=[quote(one.pk)])).status_code == 403
    response = admin_client.post(reverse("admin:batchserver_apikey_revoke", args=[quote(one.pk)]), follow=True)
    assert "Revoked the key" in response.content.decode() and 'id="bs-revoke"' not in response.content.decode()
    html = admin_client.post(
        LIST, {"action": "revoke_keys", "_selected_action": [two.pk, three.pk]}, follow=True
    ).content.decode()
    assert "Revoked 2 API keys." in html
    assert ApiKey.objects.filter(revoked_at__isnull=False).count() == 3


def test_rename_keeps_the_secret(admin_client, db):
    from batchserver.services import api_key_create

    key, _ = api_key_create(name="before", new_project="p")
    admin_client.post(key_page(key), {"name": "after", "_save": "Save"})
    old_hash = key.key_hash
    key.refresh_from_db()
    assert key.name == "after" and key.key_hash == old_hash


def test_view_only_staff_cannot_create_or_revoke(viewer_client, db):
    from batchserver.services import api_key_create

    key, _ = api_key_create(name="k", new_project="p")
    assert viewer_client.get(ADD).status_code == 403
    assert viewer_client.post(ADD, {"name": "x", "new_project": "y"}).status_code == 403
    assert viewer_client.post(reverse("admin:batchserver_apikey_revoke", args=[quote(key.pk)])).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None
    assert 'id="bs-revoke"' not in viewer_client.get(key_page(key)).content.decode()


def test_projects_list_counts_with_subqueries(admin_client, project, django_assert_max_num_queries):
    from batchserver.services import api_key_create
    from tests.admin.conftest import make_batch

    api_key_create(name="k1", project=project)
    make_batch(project)
    make_batch(project)
    with django_assert_max_num_queries(8):
        html = admin_client.get(reverse("admin:batchserver_project_changelist")).content.decode()
    row = html[html.index(">team-a<") :].split("</tr>")[0]
    assert ">1</a>" in row and ">2</a>" in row  # 1 key, 2 batches (and their 2 input files)
