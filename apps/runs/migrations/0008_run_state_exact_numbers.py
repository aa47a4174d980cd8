"""JSON that carries row keys decodes numbers as Decimal and encodes them with every digit (no SQL:
the column stays jsonb)."""

import apps.core.exactjson
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0007_escalations_decided_by_rerun'),
    ]

    operations = [
        migrations.AlterField(
            model_name='batchitem',
            name='item',
            field=models.JSONField(decoder=apps.core.exactjson.ExactDecoder, encoder=apps.core.exactjson.ExactEncoder),
        ),
        migrations.AlterField(
            model_name='run',
            name='state',
            field=models.JSONField(blank=True, decoder=apps.core.exactjson.ExactDecoder, default=dict, encoder=apps.core.exactjson.ExactEncoder),
        ),
    ]
