from django.apps import AppConfig


class BuilderConfig(AppConfig):
    """The workflow builder: a workflow described in words, drafted by a language model through any
    OpenAI-compatible endpoint, grounded in the customer's schema and checked as the API checks a workflow.
    Nothing it drafts is saved or published by itself."""

    name = "apps.builder"
    label = "builder"
