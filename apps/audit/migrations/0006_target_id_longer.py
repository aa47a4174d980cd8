# A workflow key may have 100 characters; its audit rows named it in 64. Widening a varchar is a catalog change in
# PostgreSQL: no rewrite of the table or its index.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0005_audit_data_exact_numbers'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='target_id',
            field=models.CharField(max_length=200),
        ),
    ]
