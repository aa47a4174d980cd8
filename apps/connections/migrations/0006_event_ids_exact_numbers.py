"""JSON that carries row keys decodes numbers as Decimal and encodes them with every digit (no SQL:
the column stays jsonb)."""

import apps.core.exactjson
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('connections', '0005_capture_drift_and_ownership'),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='ids',
            field=models.JSONField(decoder=apps.core.exactjson.ExactDecoder, encoder=apps.core.exactjson.ExactEncoder),
        ),
    ]
