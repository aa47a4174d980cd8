"""Phone numbers as SMS providers take them."""

import re

# E.164: a plus, a country code, up to 15 digits (ITU-T E.164).
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
