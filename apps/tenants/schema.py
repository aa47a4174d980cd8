"""OpenAPI description of the API key scheme (drf-spectacular extension, loaded by TenantsConfig)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.tenants.authentication.ApiKeyAuthentication"
    match_subclasses = False  # the trigger endpoint refers to this scheme explicitly
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Authorization: Api-Key <key>`: a platform, product or organization key.",
        }
