package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ripple-sync/ripple/schema"
)

// Sentinel errors returned (wrapped) by Verify and NewVerifier.
var (
	// ErrExpired means the token's exp is in the past (beyond the leeway).
	ErrExpired = errors.New("auth: token expired")
	// ErrInvalid means the token is malformed, badly signed, signed with an
	// unknown key or algorithm, or lacks a required claim.
	ErrInvalid = errors.New("auth: invalid token")
	// ErrNoKeys is returned by NewVerifier when neither a secret nor a key
	// set is configured.
	ErrNoKeys = errors.New("auth: no HS256 secret and no JWKS file configured")
	// ErrBadJWKS is returned by NewVerifier for a key set it cannot use.
	ErrBadJWKS = errors.New("auth: bad JWKS")
)

// Config configures a Verifier. At least one of HS256Secret and JWKSFile must
// be set.
type Config struct {
	// HS256Secret verifies HS256 tokens. Empty disables HS256.
	HS256Secret []byte
	// JWKSFile is the path of a JSON Web Key Set holding RSA (RS256) and
	// OKP Ed25519 (EdDSA) public keys. Keys are selected by the token's kid
	// header; a token without kid is tried against every key of its
	// algorithm.
	JWKSFile string
	// Leeway is the clock skew tolerated for exp (default 0).
	Leeway time.Duration
}

// Verifier checks tokens. It is immutable and safe for concurrent use.
type Verifier struct {
	secret []byte
	keys   []jwk
	leeway time.Duration
}

type jwk struct {
	kid string
	alg string // "RS256" or "EdDSA"
	key crypto.PublicKey
}

// NewVerifier validates cfg and loads its keys.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{secret: append([]byte(nil), cfg.HS256Secret...), leeway: cfg.Leeway}
	if cfg.Leeway < 0 {
		return nil, errors.New("auth: negative leeway")
	}
	if cfg.JWKSFile != "" {
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadJWKS, err)
		}
		if v.keys, err = parseJWKS(b); err != nil {
			return nil, err
		}
	}
	if len(v.secret) == 0 && len(v.keys) == 0 {
		return nil, ErrNoKeys
	}
	return v, nil
}

type jwksDoc struct {
	Keys []struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		Crv string `json:"crv"`
		N   string `json:"n"`
		E   string `json:"e"`
		X   string `json:"x"`
	} `json:"keys"`
}

// parseJWKS parses a JSON Web Key Set and returns its usable public keys:
// RSA keys (RS256) and OKP keys on curve Ed25519 (EdDSA). Keys with use
// other than "sig" and keys of other types are skipped; a set without a
// usable key is an error.
func parseJWKS(b []byte) ([]jwk, error) {
	var doc jwksDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadJWKS, err)
	}
	var out []jwk
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch k.Kty {
		case "RSA":
			if k.Alg != "" && k.Alg != "RS256" {
				continue
			}
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("%w: key %d: bad RSA n or e", ErrBadJWKS, i)
			}
			eInt := int(new(big.Int).SetBytes(e).Int64())
			if eInt < 3 || eInt%2 == 0 {
				return nil, fmt.Errorf("%w: key %d: bad RSA exponent", ErrBadJWKS, i)
			}
			pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: eInt}
			if pub.N.BitLen() < 2048 {
				return nil, fmt.Errorf("%w: key %d: RSA key shorter than 2048 bits", ErrBadJWKS, i)
			}
			out = append(out, jwk{kid: k.Kid, alg: "RS256", key: pub})
		case "OKP":
			if k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != "EdDSA" && k.Alg != "Ed25519") {
				continue
			}
			x, err := base64.RawURLEncoding.DecodeString(k.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("%w: key %d: bad Ed25519 x", ErrBadJWKS, i)
			}
			out = append(out, jwk{kid: k.Kid, alg: "EdDSA", key: ed25519.PublicKey(x)})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no RS256 or Ed25519 signing key", ErrBadJWKS)
	}
	return out, nil
}

// tokenClaims is the JWT body.
type tokenClaims struct {
	Orgs      []string `json:"orgs"`
	WriteOrgs []string `json:"write_orgs,omitempty"`
	Tables    []string `json:"tables,omitempty"`
	jwt.RegisteredClaims
}

// Verify checks the token's signature and expiry and returns its claims.
// Errors wrap ErrExpired or ErrInvalid.
func (v *Verifier) Verify(token string) (schema.Claims, error) {
	var tc tokenClaims
	var tried []error
	parse := func(key any, alg string) error {
		_, err := jwt.ParseWithClaims(token, &tc, func(*jwt.Token) (any, error) { return key, nil },
			jwt.WithValidMethods([]string{alg}), jwt.WithLeeway(v.leeway), jwt.WithExpirationRequired())
		return err
	}
	alg, kid := peekHeader(token)
	ok := false
	switch alg {
	case "HS256":
		if len(v.secret) > 0 {
			err := parse(v.secret, "HS256")
			ok = err == nil
			tried = append(tried, err)
		}
	case "RS256", "EdDSA":
		for _, k := range v.keys {
			if k.alg != alg || (kid != "" && k.kid != "" && k.kid != kid) {
				continue
			}
			tc = tokenClaims{}
			err := parse(k.key, alg)
			tried = append(tried, err)
			if err == nil {
				ok = true
				break
			}
		}
	}
	if !ok {
		for _, err := range tried {
			if errors.Is(err, jwt.ErrTokenExpired) {
				return schema.Claims{}, fmt.Errorf("%w: %w", ErrExpired, err)
			}
		}
		if len(tried) == 0 {
			return schema.Claims{}, fmt.Errorf("%w: no key for algorithm %q", ErrInvalid, alg)
		}
		return schema.Claims{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(tried...))
	}
	if tc.Subject == "" {
		return schema.Claims{}, fmt.Errorf("%w: no sub claim", ErrInvalid)
	}
	return schema.Claims{
		Subject:   tc.Subject,
		Orgs:      tc.Orgs,
		WriteOrgs: tc.WriteOrgs,
		Tables:    tc.Tables,
		Expires:   tc.ExpiresAt.Time,
	}, nil
}

// peekHeader returns the alg and kid of a token's header without verifying
// anything ("" when unreadable).
func peekHeader(token string) (alg, kid string) {
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil || tok == nil {
		return "", ""
	}
	h.Alg, _ = tok.Header["alg"].(string)
	h.Kid, _ = tok.Header["kid"].(string)
	return h.Alg, h.Kid
}

// SignHS256 returns an HS256 token for c signed with secret. c.Expires must
// be set.
func SignHS256(secret []byte, c schema.Claims) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: empty secret")
	}
	return signAny(jwt.SigningMethodHS256, secret, "", c)
}

// Sign returns a token for c signed with key: an *rsa.PrivateKey (RS256) or
// an ed25519.PrivateKey (EdDSA); kid, when set, goes into the header.
func Sign(key crypto.PrivateKey, kid string, c schema.Claims) (string, error) {
	switch key.(type) {
	case *rsa.PrivateKey:
		return signAny(jwt.SigningMethodRS256, key, kid, c)
	case ed25519.PrivateKey:
		return signAny(jwt.SigningMethodEdDSA, key, kid, c)
	}
	return "", fmt.Errorf("auth: unsupported key type %T", key)
}

func signAny(m jwt.SigningMethod, key any, kid string, c schema.Claims) (string, error) {
	if c.Expires.IsZero() {
		return "", errors.New("auth: claims without expiry")
	}
	if c.Subject == "" {
		return "", errors.New("auth: claims without subject")
	}
	t := jwt.NewWithClaims(m, tokenClaims{
		Orgs:      c.Orgs,
		WriteOrgs: c.WriteOrgs,
		Tables:    c.Tables,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			ExpiresAt: jwt.NewNumericDate(c.Expires),
			IssuedAt:  jwt.NewNumericDate(time.Now()),
		},
	})
	if kid != "" {
		t.Header["kid"] = kid
	}
	return t.SignedString(key)
}

// PublicJWK returns the JSON Web Key of the public half of key (an
// *rsa.PrivateKey or ed25519.PrivateKey), for writing JWKS files.
func PublicJWK(key crypto.PrivateKey, kid string) (map[string]string, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return map[string]string{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
			"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}, nil
	case ed25519.PrivateKey:
		return map[string]string{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
			"x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))}, nil
	}
	return nil, fmt.Errorf("auth: unsupported key type %T", key)
}
