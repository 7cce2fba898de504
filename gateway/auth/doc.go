// Package auth verifies the JSON Web Tokens clients present to a gateway and
// turns them into schema.Claims.
//
// Tokens are signed with an HS256 shared secret, or with RS256 / EdDSA
// (Ed25519) keys whose public halves are read from a JSON Web Key Set file.
// The claims Ripple uses are sub, orgs, write_orgs, tables and exp; a token
// without exp or without sub is invalid.
//
// SignHS256 issues tokens with the shared secret (used by `ripple token` and
// by tests).
package auth
