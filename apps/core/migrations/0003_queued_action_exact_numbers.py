"""Numbers with a fraction keep every digit (apps.core.exactjson); no SQL: the column stays jsonb."""

import apps.core.exactjson
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0002_action_attempt'),
    ]

    operations = [
        migrations.AlterField(
            model_name='queuedaction',
            name='args',
            field=models.JSONField(blank=True, decoder=apps.core.exactjson.ExactDecoder, default=dict, encoder=apps.core.exactjson.ExactEncoder),
        ),
        migrations.AlterField(
            model_name='queuedaction',
            name='outcome',
            field=models.JSONField(blank=True, decoder=apps.core.exactjson.ExactDecoder, encoder=apps.core.exactjson.ExactEncoder, null=True),
        ),
    ]
