"""Numbers with a fraction keep every digit (apps.core.exactjson); no SQL: the column stays jsonb."""

import apps.core.exactjson
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_append_only_redaction_bypass'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='data',
            field=models.JSONField(blank=True, decoder=apps.core.exactjson.ExactDecoder, default=dict, encoder=apps.core.exactjson.ExactEncoder),
        ),
    ]
