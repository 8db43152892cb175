// A real OpenID provider for gpuwarden's tests: the certified `oidc-provider` package on
// loopback, with fixed signing keys (oidc-test-keys.json, test keys only), its own login
// and consent pages (development interactions: any login name, any password), and:
//
//   node tests/browser/oidc-provider.mjs PORT REDIRECT_URI
//
// - client `gpuwarden-ui` (secret `ui-secret`): authorization code + PKCE, redirecting
//   to REDIRECT_URI (gpuwarden's /auth/oidc/callback);
// - accounts (login names): `vera` (groups gpu-viewers), `otto` (gpu-ops), `ada`
//   (gpu-admins), `tia` (gpu-viewers, tenant team-a), `ivan` (interns: no role there);
//   claims in the ID token under scope `groups`;
// - clients `svc-viewer`, `svc-operator`, `svc-admin`, `svc-tenant`, `svc-nobody`
//   (secret = client id): client_credentials with resource indicators, JWT access tokens
//   for the resource `https://gpuwarden.test` (gpuwarden's audience) or, asked for,
//   `https://other.test` (a wrong audience), with the same groups/tenant claims;
// - test-only routes, handled before the provider: `GET /test/token/CASE` mints tokens
//   the provider would never issue (`expired`, `wrong-issuer`, `forged` = signed with
//   an unpublished key under a published kid, `unknown-kid`, `rotated` = signed with the
//   next key), `POST /test/rotate` publishes the next key in the JWKS (key rotation),
//   and `GET /test/stats` says how often the JWKS was fetched.
//
// Prints one JSON line `{"ready": true, "issuer": …}` when listening.

import Provider, { errors } from 'oidc-provider';
import * as jose from 'jose';
import fs from 'node:fs';
import http from 'node:http';

const port = Number(process.argv[2]);
const redirectUri = process.argv[3];
if (!Number.isInteger(port) || !redirectUri) {
  console.error('usage: node oidc-provider.mjs PORT REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const AUDIENCE = 'https://gpuwarden.test';
const OTHER = 'https://other.test';
const keys = JSON.parse(fs.readFileSync(new URL('./oidc-test-keys.json', import.meta.url), 'utf8'));

const people = {
  vera: { groups: ['gpu-viewers'] },
  otto: { groups: ['gpu-ops'] },
  ada: { groups: ['gpu-admins'] },
  tia: { groups: ['gpu-viewers'], tenant: 'team-a' },
  ivan: { groups: ['interns'] },
};
const services = {
  'svc-viewer': people.vera,
  'svc-operator': people.otto,
  'svc-admin': people.ada,
  'svc-tenant': people.tia,
  'svc-nobody': people.ivan,
};

const provider = new Provider(issuer, {
  jwks: { keys: keys.current },
  clients: [
    {
      client_id: 'gpuwarden-ui',
      client_secret: 'ui-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ...Object.keys(services).map((id) => ({
      client_id: id,
      client_secret: id,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
  ],
  async findAccount(_ctx, id) {
    const who = people[id];
    if (!who) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...who }) };
  },
  claims: { openid: ['sub'], groups: ['groups', 'tenant'] },
  scopes: ['openid', 'groups', 'api'],
  // The groups belong in the ID token: that is what gpuwarden maps at sign-in.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== AUDIENCE && resource !== OTHER) throw new errors.InvalidTarget();
        return { scope: 'api', audience: resource, accessTokenTTL: 600, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  async extraTokenClaims(_ctx, token) {
    return services[token.clientId] ?? undefined;
  },
});
provider.on('server_error', (_ctx, e) => console.error('provider error:', e));

let rotated = false;
let jwksFetches = 0;
const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub;
const forgeKey = (await jose.generateKeyPair('RS256', { extractable: true })).privateKey;

async function mint(kind) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: 'svc-admin', groups: ['gpu-admins'], aud: AUDIENCE, iss: issuer, iat: now, exp: now + 600 };
  let key = await jose.importJWK(keys.current[0], 'RS256');
  let kid = keys.current[0].kid;
  switch (kind) {
    case 'expired':
      claims.iat = now - 7200;
      claims.exp = now - 3600;
      break;
    case 'wrong-issuer':
      claims.iss = 'http://127.0.0.1:1/not-the-issuer';
      break;
    case 'forged':
      key = forgeKey;
      break;
    case 'unknown-kid':
      key = forgeKey;
      kid = 'ghost-key';
      break;
    case 'rotated':
      key = await jose.importJWK(keys.next, 'RS256');
      kid = keys.next.kid;
      break;
    default:
      return null;
  }
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'at+jwt' }).sign(key);
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (req.method === 'GET' && url.pathname.startsWith('/test/token/')) {
      const t = await mint(url.pathname.slice('/test/token/'.length));
      res.writeHead(t ? 200 : 404, { 'content-type': 'text/plain' }).end(t ?? 'unknown case');
      return;
    }
    if (req.method === 'POST' && url.pathname === '/test/rotate') {
      rotated = true;
      res.writeHead(204).end();
      return;
    }
    if (req.method === 'GET' && url.pathname === '/test/stats') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jwks_fetches: jwksFetches }));
      return;
    }
    if (req.method === 'GET' && url.pathname === '/jwks') jwksFetches += 1;
    if (req.method === 'GET' && url.pathname === '/jwks' && rotated) {
      const body = JSON.stringify({ keys: [...keys.current, keys.next].map(publicJwk) });
      res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(body);
      return;
    }
  } catch (e) {
    res.writeHead(500).end(String(e));
    return;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ ready: true, issuer }));
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
