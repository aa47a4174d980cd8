"""Each email provider configuration gets its own event webhook: a token for its URL and a basic-auth
secret (encrypted). Existing configurations get theirs on their next save or secret rotation."""

import apps.core.encryption
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deliveries', '0009_delivery_payload_exact_numbers'),
    ]

    operations = [
        migrations.AddField(
            model_name='providerconfig',
            name='events_token',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.AddField(
            model_name='providerconfig',
            name='events_secret',
            field=apps.core.encryption.EncryptedTextField(blank=True, default='', help_text='Basic-auth password, encrypted at rest.'),
        ),
        migrations.AddConstraint(
            model_name='providerconfig',
            constraint=models.UniqueConstraint(condition=models.Q(('events_token', ''), _negated=True), fields=('events_token',), name='provider_events_token_unique'),
        ),
    ]
