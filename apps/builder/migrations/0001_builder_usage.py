"""What each product spends on the workflow builder per day."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('tenants', '0005_product_retention_days'),
    ]

    operations = [
        migrations.CreateModel(
            name='BuilderUsage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('calls', models.PositiveIntegerField(default=0)),
                ('tokens', models.PositiveBigIntegerField(default=0)),
                ('product', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenants.product')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('product', 'day'), name='builder_usage_per_day')],
            },
        ),
    ]
