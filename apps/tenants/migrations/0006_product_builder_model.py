"""A product may have its own workflow builder model, set by the platform (its key encrypted at rest)."""

import apps.core.encryption
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0005_product_retention_days'),
    ]

    operations = [
        migrations.AddField(
            model_name='product',
            name='ai_api_key',
            field=apps.core.encryption.EncryptedTextField(blank=True, default='', help_text='Encrypted at rest, never shown again.'),
        ),
        migrations.AddField(
            model_name='product',
            name='ai_base_url',
            field=models.CharField(blank=True, default='', max_length=500),
        ),
        migrations.AddField(
            model_name='product',
            name='ai_model',
            field=models.CharField(blank=True, default='', max_length=200),
        ),
    ]
