from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

from apps.core.exactjson import ExactNumbers


class ExactJSONEncoder(ExactNumbers, JSONEncoder):
    """DRF's encoder, with a Decimal (a row key or value read from a customer's database) written as a number
    with its digits instead of as a float. DecimalFields are unchanged: they serialize to strings first."""


class ExactJSONRenderer(JSONRenderer):
    encoder_class = ExactJSONEncoder
