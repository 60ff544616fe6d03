// Drives the official posthog-node (npm) SDK against a dropscope server.
// Usage: node node_client.js HOST PROJECT_TOKEN   (run with NODE_PATH set to
// the folder holding node_modules). Exits non-zero on any SDK error.
// Sends the same story as python_client.py (see there), through identify(),
// capture() with groups, alias(), groupIdentify(); one client gzips (the
// default), one does not.
const { PostHog } = require('posthog-node');

const [host, token] = process.argv.slice(2);
const errors = [];
const mk = (disableCompression) => {
  const c = new PostHog(token, { host, flushAt: 25, flushInterval: 0, fetchRetryCount: 0, disableCompression });
  c.on('error', (e) => errors.push(String(e && e.message ? e.message : e)));
  return c;
};
const plain = mk(true);
const gz = mk(false);
const t0 = Date.now() - 3600 * 1000;
const at = (s) => new Date(t0 + s * 1000);

(async () => {
  plain.capture({ distinctId: 'anon-1', event: '$pageview', properties: { $current_url: '/pricing' }, groups: { company: 'acme' }, timestamp: at(0) });
  await plain.flush();
  plain.identify({ distinctId: 'user-1', properties: { $anon_distinct_id: 'anon-1', $set: { email: 'p1@example.com' } } });
  await plain.flush();
  plain.capture({ distinctId: 'user-1', event: 'signup', properties: { method: 'email' }, groups: { company: 'acme' }, timestamp: at(3) });
  plain.alias({ distinctId: 'user-1', alias: 'alias-1' });
  await plain.flush();
  plain.capture({ distinctId: 'alias-1', event: 'purchase', properties: { amount: 42.5 }, groups: { company: 'acme' }, timestamp: at(5) });
  plain.groupIdentify({ groupType: 'company', groupKey: 'acme', properties: { name: 'Acme' } });
  plain.capture({ distinctId: 'anon-2', event: '$pageview', timestamp: at(7) });
  await plain.flush();
  for (let i = 0; i < 40; i++) {
    const c = i % 2 ? gz : plain;
    const d = `b${i}`;
    c.capture({ distinctId: d, event: '$pageview', timestamp: at(10 + i) });
    if (i % 2 === 0) c.capture({ distinctId: d, event: 'signup', timestamp: at(100 + i) });
    if (i % 4 === 0) c.capture({ distinctId: d, event: 'purchase', timestamp: at(200 + i) });
  }
  await plain.shutdown();
  await gz.shutdown();
  if (errors.length) {
    console.error('SDK errors:\n  ' + errors.join('\n  '));
    process.exit(1);
  }
  console.log('node sdk: ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
