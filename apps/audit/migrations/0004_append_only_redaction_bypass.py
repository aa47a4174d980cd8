"""The append-only trigger of audit rows lets one kind of update through: a redaction made by a migration
that sets `rowbell.audit_redaction` to 'on' with SET LOCAL, for its own transaction only (deliveries 0011
masks webhook URLs so). Even then only `data` may change: the row's other columns stay as written.

This replaces `ALTER TABLE ... DISABLE TRIGGER` in such a migration, which needs the table's owner and
holds an ACCESS EXCLUSIVE lock on the audit table (every audited write waits) until the migration commits.
"""

from django.db import migrations

REDACTION_ALLOWED = """
CREATE OR REPLACE FUNCTION audit_auditevent_forbid_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- SET LOCAL rowbell.audit_redaction = 'on': a migration redacting secrets from `data` (nothing else).
    IF current_setting('rowbell.audit_redaction', true) = 'on'
       AND to_jsonb(NEW) - 'data' = to_jsonb(OLD) - 'data' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit rows are append-only';
END;
$$;
"""

NO_UPDATE = """
CREATE OR REPLACE FUNCTION audit_auditevent_forbid_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only';
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_indexes_lean")]

    operations = [migrations.RunSQL(REDACTION_ALLOWED, NO_UPDATE)]
