"""API keys in the operator console. (The console itself, and the projects page, which counts every app's rows, are
batchserver/admin_site.py: the project's wiring.) A key is created through batchserver.services.api_key_create and
shown exactly once, on the page that answers the form; it is never stored, put in a message or the session, or shown
again. Its project is typed in as a new one, or picked from the existing ones by staff with the permission "Can create
API keys for existing projects" (a key sees every file and batch of its project)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from batchserver import queue_admin  # noqa: F401 - django-q2's pages, read-only
from batchserver.admin_kit import ConsoleMedia, badge
from batchserver.limits import requests_per_minute
from batchserver.models import PERM_ADD_TO_EXISTING_PROJECT, ApiKey, Project
from batchserver.services import api_key_create, api_key_revoke


# ------------------------------------------------------------------------------------------------ API keys
class ApiKeyCreateForm(forms.ModelForm):
    """A key and the new project it is created with. Adding a key to an existing project is a separate, named
    permission (ApiKeyForExistingProjectForm): never a guess from the key's name."""

    new_project = forms.CharField(
        label="New project",
        max_length=200,
        required=False,
        help_text="Created with the key; it owns no files or batches yet.",
    )

    class Meta:
        model = ApiKey
        fields = ("name",)

    def clean_new_project(self):
        name = self.cleaned_data["new_project"]
        if name and Project.objects.filter(name=name).exists():
            if "project" in self.fields:
                raise forms.ValidationError(
                    f"A project named “{name}” exists already: choose it under “Existing "
                    "project”, or type another name."
                )
            raise forms.ValidationError(
                f"A project named “{name}” exists already. Type another name, or ask an "
                "administrator for the permission “Can create API keys for existing "
                "projects”."
            )
        return name

    def clean(self):
        cleaned = super().clean()
        chosen = [field for field in ("project", "new_project") if cleaned.get(field)]
        if len(chosen) != 1 and not self.has_error("new_project"):
            raise forms.ValidationError(
                "Choose an existing project or type the name of a new one (one of the two)."
                if "project" in self.fields
                else "Type the name of the new project the key is for."
            )
        return cleaned


class ApiKeyForExistingProjectForm(ApiKeyCreateForm):
    project = forms.ModelChoiceField(
        label="Existing project",
        queryset=Project.objects.order_by("name"),
        required=False,
        help_text="The new key sees every file and batch of this project.",
    )

    field_order = ("name", "project", "new_project")


class RevokedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "shown_prefix", "owner", "created_at", "last_used_at", "rate_limit", "state")
    list_select_related = ("project",)
    list_filter = (RevokedFilter, ("project", admin.RelatedFieldListFilter))
    search_fields = ("name", "prefix", "project__name")
    ordering = ("-created_at",)
    actions = ("revoke_keys",)
    readonly_fields = ("shown_prefix", "owner", "created_at", "last_used_at", "state")
    change_form_template = "admin/batchserver/apikey/change_form.html"

    class Media(ConsoleMedia):
        pass

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the row keeps who used what, and when

    def may_add_to_existing_projects(self, request) -> bool:
        return request.user.has_perm(PERM_ADD_TO_EXISTING_PROJECT)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            existing = self.may_add_to_existing_projects(request)
            return [
                (
                    None,
                    {
                        "fields": ("name", "project", "new_project") if existing else ("name", "new_project"),
                        "description": "The key is shown once, on the next page. Only its SHA-256 and its "
                        "first 12 characters are stored.",
                    },
                )
            ]
        return [
            (None, {"fields": ("name", "shown_prefix", "owner", "state", "created_at", "last_used_at")}),
            ("Limits", {"fields": ("rate_limit_rpm",)}),
        ]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = (
                ApiKeyForExistingProjectForm if self.may_add_to_existing_projects(request) else ApiKeyCreateForm
            )
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, obj):
        return format_html('<span class="bs-mono">{}…</span>', obj.prefix)

    @admin.display(description="owner", ordering="project__name")
    def owner(self, obj):
        return obj.project.name

    @admin.display(description="rate limit", ordering="rate_limit_rpm")
    def rate_limit(self, obj):
        rpm = requests_per_minute(obj)
        shown = "unlimited" if rpm is None else f"{rpm:,}/min"
        if obj.rate_limit_rpm is None:
            return format_html('<span class="bs-quiet">{} (default)</span>', shown)
        return shown

    @admin.display(description="state", ordering="revoked_at")
    def state(self, obj):
        if obj.revoked_at:
            return format_html(
                '{} <span class="bs-quiet">{}</span>',
                badge("key", "revoked", "revoked"),
                timezone.localtime(obj.revoked_at).strftime("%Y-%m-%d %H:%M"),
            )
        return badge("key", "active", "active")

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "API keys", **(extra_context or {})})

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and request.POST.get("project") and not self.may_add_to_existing_projects(request):
            raise PermissionDenied(
                "Creating API keys for existing projects needs the permission "
                "“Can create API keys for existing projects”."
            )
        context = {
            "title": "Create an API key",
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            **(extra_context or {}),
        }
        return super().add_view(request, form_url, context)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw_key = api_key_create(
            name=form.cleaned_data["name"],
            project=form.cleaned_data.get("project"),
            new_project=form.cleaned_data.get("new_project") or None,
        )
        obj.pk, obj.project_id, obj.prefix, obj.key_hash, obj.created_at = (
            key.pk,
            key.project_id,
            key.prefix,
            key.key_hash,
            key.created_at,
        )
        obj._state.adding = False
        request._batchserver_new_key = raw_key  # for response_add only: this request, never stored

    def response_add(self, request, obj, post_url_continue=None):
        raw_key = getattr(request, "_batchserver_new_key", None)
        if raw_key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "key": obj,
            "project": obj.project,
            "raw_key": raw_key,
            "base_url": request.build_absolute_uri("/v1"),
            "media": self.media,
        }
        response = TemplateResponse(request, "admin/batchserver/apikey/created.html", context)
        response["Cache-Control"] = "no-store, private"
        response["Pragma"] = "no-cache"
        return response

    # -------------------------------------------------------------------------------------- revoke
    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_revoke"
        revoke = path("<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view), name=name)
        return [revoke, *super().get_urls()]

    def revoke_view(self, request, object_id):
        if request.method != "POST":
            raise PermissionDenied
        key = self.get_object(request, unquote(object_id))
        if key is None:
            raise Http404("No such API key.")
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        if key.revoked_at is None:
            api_key_revoke(key=key)
            self.log_change(request, key, "Revoked.")
            self.message_user(request, f"Revoked the key “{key}”. Requests with it now get a 401.", messages.SUCCESS)
        else:
            self.message_user(request, f"The key “{key}” was already revoked.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:batchserver_apikey_change", args=[quote(key.pk)]))

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key)
            self.log_change(request, key, "Revoked.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key{'s' if revoked != 1 else ''}.", messages.SUCCESS)
