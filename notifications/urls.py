from django.urls import path

from notifications.api import NotificationDetailApi, NotificationListApi, NotificationResendApi

urlpatterns = [
    path("notifications", NotificationListApi.as_view(), name="notifications"),
    path(
        "notifications/<str:notification_id>",
        NotificationDetailApi.as_view(),
        name="notification-detail",
    ),
    path(
        "notifications/<str:notification_id>/resend",
        NotificationResendApi.as_view(),
        name="notification-resend",
    ),
]
