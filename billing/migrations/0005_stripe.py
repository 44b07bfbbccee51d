from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0005_apimessage_speed"),
        ("billing", "0004_customer_margin"),
        ("customers", "0002_verbose_names"),
    ]

    operations = [
        migrations.CreateModel(
            name='StripeWebhookEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_id', models.CharField(max_length=64, unique=True)),
                ('type', models.CharField(db_index=True, max_length=100)),
                ('created', models.BigIntegerField(help_text="Stripe's creation time, Unix seconds.")),
                ('livemode', models.BooleanField(default=False)),
                ('payload', models.JSONField()),
                ('status', models.CharField(choices=[('received', 'Received'), ('processed', 'Processed'), ('ignored', 'Ignored: no handler or unknown object'), ('failed', 'Failed')], default='received', max_length=16)),
                ('error', models.TextField(blank=True, help_text='Traceback of the last failure.')),
                ('received_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('processed_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-received_at'],
            },
        ),
        migrations.AddField(
            model_name='plan',
            name='stripe_meter_event_name',
            field=models.CharField(blank=True, help_text="Event name of the plan's Stripe meter. Fixed once the meter exists.", max_length=100),
        ),
        migrations.AddField(
            model_name='plan',
            name='stripe_meter_id',
            field=models.CharField(blank=True, help_text="Stripe's billing meter (mtr_…) of metered plans, set by stripe_sync_plans.", max_length=64),
        ),
        migrations.AddField(
            model_name='plan',
            name='stripe_metered_price_id',
            field=models.CharField(blank=True, help_text="Stripe's price_… id of the usage price on the meter.", max_length=64),
        ),
        migrations.AddField(
            model_name='plan',
            name='stripe_price_id',
            field=models.CharField(blank=True, help_text="Stripe's price_… id of the monthly price, set by stripe_sync_plans.", max_length=64),
        ),
        migrations.AddField(
            model_name='plan',
            name='stripe_product_id',
            field=models.CharField(blank=True, help_text="Stripe's prod_… id, set by stripe_sync_plans.", max_length=64),
        ),
        migrations.AddField(
            model_name='subscription',
            name='stripe_event_created',
            field=models.BigIntegerField(blank=True, help_text='Creation time (Unix seconds) of the latest Stripe event applied. Older events that arrive later are ignored.', null=True),
        ),
        migrations.AddField(
            model_name='subscription',
            name='stripe_status',
            field=models.CharField(blank=True, help_text='Status of the Stripe subscription, from its latest webhook event.', max_length=32),
        ),
        migrations.AddField(
            model_name='subscription',
            name='stripe_subscription_id',
            field=models.CharField(blank=True, help_text="Stripe's sub_… id, once created in Stripe.", max_length=64),
        ),
        migrations.AlterField(
            model_name='alert',
            name='kind',
            field=models.CharField(choices=[('stalled_execution', 'Stalled execution'), ('stripe_late_usage', 'Usage too old for Stripe'), ('stripe_metering_failed', 'Stripe metering failed'), ('stripe_payment_failed', 'Stripe payment failed'), ('stripe_reconciliation', 'Stripe usage differs')], max_length=40),
        ),
        migrations.CreateModel(
            name='MeterEventDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('identifier', models.CharField(max_length=100, unique=True)),
                ('event_name', models.CharField(max_length=100)),
                ('stripe_customer_id', models.CharField(max_length=64)),
                ('value', models.DecimalField(decimal_places=12, help_text='Executions for per-execution plans, cents of token cost for cost-plus.', max_digits=26)),
                ('timestamp', models.DateTimeField(help_text='When the execution finished: the time Stripe bills it at.')),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('delivered', 'Delivered'), ('exception', 'Exception: bill by hand')], default='pending', max_length=16)),
                ('attempts', models.PositiveIntegerField(default=0, help_text='Requests sent to Stripe, retries included.')),
                ('last_error', models.TextField(blank=True)),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('customer', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='customers.customer')),
                ('execution', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='meter_event_delivery', to='agents.execution')),
                ('plan', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='billing.plan')),
            ],
            options={
                'verbose_name_plural': 'meter event deliveries',
                'ordering': ['-timestamp'],
            },
        ),
        migrations.CreateModel(
            name='MeteringException',
            fields=[
            ],
            options={
                'verbose_name': 'metering exception',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('billing.metereventdelivery',),
        ),
        migrations.CreateModel(
            name='ReconciliationDifference',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('stripe_meter_id', models.CharField(max_length=64)),
                ('period_start', models.DateField()),
                ('period_end', models.DateField(help_text='First day after the period.')),
                ('checked_until', models.DateTimeField(help_text='End of the compared time range; usage after it is not compared.')),
                ('expected', models.DecimalField(decimal_places=12, help_text='Our count: the meter values of the counted executions.', max_digits=26)),
                ('stripe_value', models.DecimalField(decimal_places=12, help_text="Sum from Stripe's meter event summaries.", max_digits=26)),
                ('difference', models.DecimalField(decimal_places=12, help_text="Stripe's value minus ours.", max_digits=26)),
                ('resolved_at', models.DateTimeField(blank=True, help_text='When a later check found both equal.', null=True)),
                ('checked_at', models.DateTimeField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('customer', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='customers.customer')),
                ('plan', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='billing.plan')),
            ],
            options={
                'ordering': ['-checked_at'],
            },
        ),
        migrations.CreateModel(
            name='StripeInvoice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('stripe_id', models.CharField(max_length=64, unique=True)),
                ('stripe_customer_id', models.CharField(blank=True, max_length=64)),
                ('stripe_subscription_id', models.CharField(blank=True, max_length=64)),
                ('number', models.CharField(blank=True, max_length=64)),
                ('status', models.CharField(blank=True, max_length=32)),
                ('currency', models.CharField(blank=True, max_length=3)),
                ('total', models.BigIntegerField(default=0)),
                ('amount_due', models.BigIntegerField(default=0)),
                ('amount_paid', models.BigIntegerField(default=0)),
                ('amount_remaining', models.BigIntegerField(default=0)),
                ('period_start', models.DateTimeField(blank=True, null=True)),
                ('period_end', models.DateTimeField(blank=True, null=True)),
                ('hosted_invoice_url', models.URLField(blank=True, max_length=500)),
                ('stripe_created', models.BigIntegerField(blank=True, help_text="Stripe's creation time, Unix seconds.", null=True)),
                ('stripe_event_created', models.BigIntegerField(blank=True, help_text='Creation time of the latest Stripe event applied, Unix seconds.', null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('customer', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='stripe_invoices', to='customers.customer')),
            ],
            options={
                'ordering': ['-stripe_created'],
            },
        ),
        migrations.CreateModel(
            name='StripeInvoiceItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('line_kind', models.CharField(max_length=40)),
                ('description', models.CharField(max_length=300)),
                ('amount', models.DecimalField(decimal_places=2, max_digits=12)),
                ('currency', models.CharField(max_length=3)),
                ('stripe_invoice_item_id', models.CharField(blank=True, max_length=64)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('statement', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='stripe_invoice_items', to='billing.periodstatement')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddIndex(
            model_name='metereventdelivery',
            index=models.Index(fields=['status', 'timestamp'], name='billing_met_status_0e0945_idx'),
        ),
        migrations.AddConstraint(
            model_name='reconciliationdifference',
            constraint=models.UniqueConstraint(fields=('customer', 'stripe_meter_id', 'period_start'), name='unique_reconciliation_difference'),
        ),
        migrations.AddConstraint(
            model_name='stripeinvoiceitem',
            constraint=models.UniqueConstraint(fields=('statement', 'line_kind'), name='unique_stripe_invoice_item_per_line'),
        ),
    ]
