// Verifies a LiveKit access token with LiveKit's own server SDK (livekit-server-sdk's
// TokenVerifier), not Parley's code, and prints the claims it found as one JSON line.
//
//   node livekit_verify.mjs API_KEY API_SECRET TOKEN
//
// Exits 1 with {"error": ...} when the token does not verify (wrong key or secret, expired,
// not yet valid, malformed).

import { TokenVerifier } from "livekit-server-sdk";

const [apiKey, apiSecret, token] = process.argv.slice(2);
try {
  const claims = await new TokenVerifier(apiKey, apiSecret).verify(token);
  process.stdout.write(JSON.stringify(claims) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e && e.message ? e.message : e) }) + "\n");
  process.exit(1);
}
