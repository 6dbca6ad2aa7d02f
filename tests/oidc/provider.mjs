// A real OpenID Connect provider for the sign-in tests: panva's oidc-provider (OpenID Certified),
// configured with one confidential client (the hub) and its development sign-in pages, where any
// login name signs in as that account (the `sub` claim is the login name).
//
// It also stands in for NHS login (issue 18): a login name such as `P9-9994500007` signs in a
// person identity-proofed to level P9 with that NHS number (the claims `identity_proofing_level`
// and `nhs_number` in the id_token, as NHS login sends them).
//
//   node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI [MORE_REDIRECT_URIS...]
//
// Prints "ready <issuer>" once listening; stops on SIGTERM.
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, ...redirectUris] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub', 'identity_proofing_level'], profile: ['name', 'nhs_number'], email: ['email'] },
  async findAccount(ctx, id) {
    const citizen = /^(P[0-9])-([0-9]{10})$/.exec(id);
    return {
      accountId: id,
      async claims() {
        if (citizen) {
          return { sub: id, name: `Citizen ${citizen[2]}`, identity_proofing_level: citizen[1], nhs_number: citizen[2] };
        }
        return { sub: id, name: `Staff member ${id}`, email: `${id}@nhs.example` };
      },
    };
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['ipc-hub-tests-only-cookie-key'] },
});
provider.proxy = false;

const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
