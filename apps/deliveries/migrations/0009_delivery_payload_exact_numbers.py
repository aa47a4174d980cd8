"""JSON that carries row keys decodes numbers as Decimal and encodes them with every digit (no SQL:
the column stays jsonb)."""

import apps.core.exactjson
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deliveries', '0008_operator_permissions'),
    ]

    operations = [
        migrations.AlterField(
            model_name='delivery',
            name='payload',
            field=models.JSONField(decoder=apps.core.exactjson.ExactDecoder, encoder=apps.core.exactjson.ExactEncoder, help_text='The rendered message, exactly as it is sent.'),
        ),
    ]
