from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.routers import DefaultRouter

from batches_api.views import BatchViewSet, ModelViewSet
from batchserver.health import healthz, readyz
from batchserver.metrics import metrics_view
from files_api.views import FileViewSet, UploadViewSet

router = DefaultRouter(trailing_slash=False)
router.include_root_view = False
router.register("files", FileViewSet, basename="file")
router.register("uploads", UploadViewSet, basename="upload")
router.register("batches", BatchViewSet, basename="batch")
router.register("models", ModelViewSet, basename="model")

urlpatterns = [
    path(
        "v1/openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="openapi",
    ),
    path("v1/", include(router.urls)),
    path("v1/", include("webhooks.urls")),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]

handler400 = "batchserver.errors.handler400"
handler404 = "batchserver.errors.handler404"
handler500 = "batchserver.errors.handler500"
