from django.db import models


class BuilderUsage(models.Model):
    """What a product spent on the builder in one UTC day: calls to the model and tokens (prompt and reply),
    against ROWBELL_AI_DAILY_CALLS and ROWBELL_AI_DAILY_TOKENS."""

    product = models.ForeignKey("tenants.Product", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "day"], name="builder_usage_per_day")]

    def __str__(self):
        return f"{self.product_id} {self.day}: {self.calls} calls, {self.tokens} tokens"
