"""Django with its defaults (psycopg 3, server-side cursors for .iterator(),
persistent-less connections per thread) through pgtenant in transaction mode.

`django_app.py migrate` (run by `pgtenant migrate --each`): `manage.py
migrate`, then prints the applied migrations of the app as one JSON line.
`django_app.py`: ORM CRUD, transaction.atomic, `.iterator()` outside a
transaction while 20 other threads run, then close; prints one JSON line.

Env: PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD on a migrate --each
route)."""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_shop"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["PGDATABASE"],
            "USER": os.environ["PGUSER"],
            "HOST": os.environ["PGHOST"],
            "PORT": os.environ["PGPORT"],
        }
    },
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django_shop.models import Item  # noqa: E402

if sys.argv[1:] == ["migrate"]:
    from django.db.migrations.recorder import MigrationRecorder  # noqa: E402

    call_command("migrate", verbosity=0)
    applied = MigrationRecorder.Migration.objects.filter(app="django_shop").order_by("name")
    print(json.dumps({"migrated": [m.name for m in applied]}))
    sys.exit(0)

# CRUD, and a transaction that rolls back.
Item.objects.all().delete()
a = Item.objects.create(name="first", qty=1)
Item.objects.filter(pk=a.pk).update(qty=2)
assert Item.objects.get(pk=a.pk).qty == 2
try:
    with transaction.atomic():
        Item.objects.create(name="rolled back")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
assert not Item.objects.filter(name="rolled back").exists()
a.delete()
Item.objects.bulk_create([Item(name=f"bulk-{i}", qty=i) for i in range(3000)])

errors = []
stop = threading.Event()


def worker(n):
    try:
        while not stop.is_set():
            with transaction.atomic():
                it = Item.objects.create(name=f"w{n}", qty=n)
                Item.objects.filter(pk=it.pk).update(qty=n + 1)
            Item.objects.filter(name=f"w{n}").delete()
    except Exception as e:  # noqa: BLE001
        errors.append(f"worker {n}: {e!r}")
    finally:
        connections.close_all()


threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
for t in threads:
    t.start()
# A server-side (WITH HOLD) cursor outside a transaction, fetched in chunks
# across many transactions while the workers run.
seen = 0
total = 0
for item in Item.objects.filter(name__startswith="bulk-").order_by("id").iterator(chunk_size=100):
    seen += 1
    total += item.qty
stop.set()
for t in threads:
    t.join()
connection.close()
print(json.dumps({"iterated": seen, "sum": total, "errors": errors}))
