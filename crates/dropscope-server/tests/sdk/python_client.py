"""Drives the official posthog (PyPI) SDK against a dropscope server.

Usage: python_client.py HOST PROJECT_TOKEN
Exits non-zero if the SDK reports any error.

What it sends (the Rust test checks the funnel $pageview -> signup -> purchase):
- anon-1 views a page (with a group), is identified as user-1 ($identify with
  $anon_distinct_id and $set), signs up, is aliased to alias-1 and purchases
  as alias-1: one person through all three steps;
- anon-2 only views a page;
- 40 batch users b0..b39: all view, even ones sign up, every fourth purchases
  (several batches: flush_at=25), half of them through a gzip client.
"""
import sys
from datetime import datetime, timedelta, timezone

from posthog import Posthog

host, token = sys.argv[1], sys.argv[2]
errors = []


def on_error(e, batch):
    errors.append(f"{e!r} ({len(batch)} events)")


plain = Posthog(token, host=host, flush_at=25, gzip=False, max_retries=0, on_error=on_error)
gz = Posthog(token, host=host, flush_at=25, gzip=True, max_retries=0, on_error=on_error)
t0 = datetime.now(timezone.utc) - timedelta(hours=1)


def at(s):
    return t0 + timedelta(seconds=s)


plain.capture("$pageview", distinct_id="anon-1", properties={"$current_url": "/pricing"},
              groups={"company": "acme"}, timestamp=at(0))
plain.capture("$identify", distinct_id="user-1",
              properties={"$anon_distinct_id": "anon-1", "$set": {"email": "p1@example.com"}},
              timestamp=at(1))
plain.set(distinct_id="user-1", properties={"plan": "pro"}, timestamp=at(2))
plain.capture("signup", distinct_id="user-1", properties={"method": "email"},
              groups={"company": "acme"}, timestamp=at(3))
plain.alias(previous_id="user-1", distinct_id="alias-1", timestamp=at(4))
plain.capture("purchase", distinct_id="alias-1", properties={"amount": 42.5},
              groups={"company": "acme"}, timestamp=at(5))
plain.group_identify("company", "acme", {"name": "Acme"}, distinct_id="user-1", timestamp=at(6))
plain.capture("$pageview", distinct_id="anon-2", timestamp=at(7))
plain.flush()

for i in range(40):
    c = gz if i % 2 else plain
    d = f"b{i}"
    c.capture("$pageview", distinct_id=d, timestamp=at(10 + i))
    if i % 2 == 0:
        c.capture("signup", distinct_id=d, timestamp=at(100 + i))
    if i % 4 == 0:
        c.capture("purchase", distinct_id=d, timestamp=at(200 + i))

for c in (plain, gz):
    c.flush()
    c.shutdown()

if errors:
    print("SDK errors:", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("python sdk: ok")
