from django.db import migrations

FORBID_UPDATE = """
CREATE OR REPLACE FUNCTION audit_auditevent_forbid_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only';
END;
$$;
CREATE TRIGGER audit_auditevent_append_only
    BEFORE UPDATE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_auditevent_forbid_update();
"""

ALLOW_UPDATE = """
DROP TRIGGER IF EXISTS audit_auditevent_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_auditevent_forbid_update();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunSQL(FORBID_UPDATE, ALLOW_UPDATE)]
