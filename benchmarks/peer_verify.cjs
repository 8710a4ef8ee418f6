// aws-jwt-verify's verifySync on N ES256 tokens, best of R repetitions (CPU time).
// Run by benchmarks/peer.py: reads {"module", "issuer", "audience", "jwks", "tokens",
// "repetitions"} on stdin, prints {"us_per_token", "verified", "version"}.
"use strict";
const path = require("path");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const { JwtVerifier } = require(input.module);
const version = require(path.join(input.module, "package.json")).version;

const verifier = JwtVerifier.create({
  issuer: input.issuer,
  audience: input.audience,
  jwksUri: "https://jwks.invalid/.well-known/jwks.json", // never fetched: cacheJwks below
});
verifier.cacheJwks(input.jwks);

let verified = 0;
let best = Infinity;
for (let rep = 0; rep < input.repetitions; rep++) {
  const start = process.cpuUsage();
  for (const token of input.tokens) {
    verifier.verifySync(token); // throws on any failure
    verified++;
  }
  const used = process.cpuUsage(start);
  best = Math.min(best, (used.user + used.system) / input.tokens.length);
}
process.stdout.write(JSON.stringify({ us_per_token: best, verified, version }));
