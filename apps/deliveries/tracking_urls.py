from django.conf import settings
from django.http import HttpResponseForbidden
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from . import views


def _provider_webhook(view, *, also_needs: str = ""):
    """anymail's view for one provider's event webhook, refused outright until it is secured: HTTP basic
    auth (ROWBELL_PROVIDER_WEBHOOK_SECRET) and, where the provider signs its calls, its signing key."""

    @csrf_exempt
    def secured(request, *args, **kwargs):
        config = getattr(settings, "ANYMAIL", {})
        if not config.get("WEBHOOK_SECRET") or (also_needs and not config.get(also_needs)):
            return HttpResponseForbidden("Provider event webhooks are not configured on this service.",
                                         content_type="text/plain")
        return view(request, *args, **kwargs)

    return secured


def _anymail_views():
    from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView

    return [
        path("webhooks/providers/sendgrid/tracking/", _provider_webhook(SendGridTrackingWebhookView.as_view()),
             name="provider-events-sendgrid"),
        path("webhooks/providers/mailgun/tracking/",
             _provider_webhook(MailgunTrackingWebhookView.as_view(), also_needs="MAILGUN_WEBHOOK_SIGNING_KEY"),
             name="provider-events-mailgun"),
        path("webhooks/providers/postmark/tracking/", _provider_webhook(PostmarkTrackingWebhookView.as_view()),
             name="provider-events-postmark"),
        path("webhooks/providers/amazon_ses/tracking/", _provider_webhook(AmazonSESTrackingWebhookView.as_view()),
             name="provider-events-amazon-ses"),
    ]


urlpatterns = [
    path("t/o/<str:token>.gif", views.tracked_open, name="tracked-open"),
    path("t/c/<str:token>", views.tracked_click, name="tracked-click"),
    *_anymail_views(),
]
