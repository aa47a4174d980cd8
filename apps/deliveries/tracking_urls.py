from django.conf import settings
from django.http import HttpResponseForbidden
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from . import views
from .provider_events import provider_events, verified_ses_view


def _provider_webhook(view, *, also_needs: str = ""):
    """anymail's view for one provider's event webhook on the service-wide route, refused outright until
    it is secured: HTTP basic auth (ROWBELL_PROVIDER_WEBHOOK_SECRET) and, where the provider signs its
    calls, its signing key. Kept for deployments set up before per-product event webhooks; one secret
    serves every product there, so new set-ups use each provider configuration's own URL."""

    @csrf_exempt
    def secured(request, *args, **kwargs):
        config = getattr(settings, "ANYMAIL", {})
        if not config.get("WEBHOOK_SECRET") or (also_needs and not config.get(also_needs)):
            return HttpResponseForbidden(
                "Provider event webhooks are not configured on this service.", content_type="text/plain"
            )
        return view(request, *args, **kwargs)

    return secured


def _anymail_views():
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView

    return [
        path(
            "webhooks/providers/sendgrid/tracking/",
            _provider_webhook(SendGridTrackingWebhookView.as_view()),
            name="provider-events-sendgrid",
        ),
        path(
            "webhooks/providers/mailgun/tracking/",
            _provider_webhook(MailgunTrackingWebhookView.as_view(), also_needs="MAILGUN_WEBHOOK_SIGNING_KEY"),
            name="provider-events-mailgun",
        ),
        path(
            "webhooks/providers/postmark/tracking/",
            _provider_webhook(PostmarkTrackingWebhookView.as_view()),
            name="provider-events-postmark",
        ),
        # SNS signatures are checked here too; any topic is accepted (this route knows no product).
        path(
            "webhooks/providers/amazon_ses/tracking/",
            _provider_webhook(verified_ses_view().as_view()),
            name="provider-events-amazon-ses",
        ),
    ]


urlpatterns = [
    path("t/o/<str:token>.gif", views.tracked_open, name="tracked-open"),
    path("t/c/<str:token>", views.tracked_click, name="tracked-click"),
    path("webhooks/providers/<slug:provider>/<str:token>/tracking/", provider_events, name="provider-events"),
    *_anymail_views(),
]
