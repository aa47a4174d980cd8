"""Tracking endpoints recipients' mail clients reach: the open pixel and the click redirect."""

import base64

from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseGone, HttpResponseRedirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .models import DeliveryStatus, EventSource
from .tracking import TokenExpired, click_target, engagement_record, open_message

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@never_cache
@require_GET
def tracked_open(request, token):
    """A 1x1 GIF whatever the token says (a mail client shows nothing either way); only a valid one counts."""
    message_id = open_message(token)
    if message_id:
        engagement_record(
            message_id=message_id,
            status=DeliveryStatus.OPENED,
            source=EventSource.TRACKING,
            detail={"user_agent": request.headers.get("User-Agent", "")[:200]},
        )
    return HttpResponse(PIXEL, content_type="image/gif")


@never_cache
@require_GET
def tracked_click(request, token):
    """Redirect to the link's signed target and count the click; an altered token goes nowhere (400), nor
    does one past ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS (410 Gone: it was real, and is no more)."""
    try:
        found = click_target(token)
    except TokenExpired:
        return HttpResponseGone("This link has expired.", content_type="text/plain")
    if found is None:
        return HttpResponseBadRequest("This link is not valid.", content_type="text/plain")
    message_id, target = found
    engagement_record(
        message_id=message_id, status=DeliveryStatus.CLICKED, source=EventSource.TRACKING, detail={"url": target[:500]}
    )
    return HttpResponseRedirect(target)
