package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

func claims(exp time.Duration) schema.Claims {
	return schema.Claims{Subject: "u1", Orgs: []string{"acme", "beta"}, WriteOrgs: []string{"acme"},
		Tables: []string{"todos"}, Expires: time.Now().Add(exp).Truncate(time.Second)}
}

func writeJWKS(t *testing.T, keys ...map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerify(t *testing.T) {
	secret := []byte("s3cret-s3cret-s3cret")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	rj, _ := PublicJWK(rsaKey, "r1")
	ej, _ := PublicJWK(edKey, "e1")
	v, err := NewVerifier(Config{HS256Secret: secret, JWKSFile: writeJWKS(t, rj, ej)})
	if err != nil {
		t.Fatal(err)
	}
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := claims(time.Hour)
	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"hs256", must(SignHS256(secret, good)), nil},
		{"rs256", must(Sign(rsaKey, "r1", good)), nil},
		{"rs256 no kid", must(Sign(rsaKey, "", good)), nil},
		{"eddsa", must(Sign(edKey, "e1", good)), nil},
		{"hs256 expired", must(SignHS256(secret, claims(-time.Hour))), ErrExpired},
		{"eddsa expired", must(Sign(edKey, "e1", claims(-time.Hour))), ErrExpired},
		{"wrong secret", must(SignHS256([]byte("other"), good)), ErrInvalid},
		{"unknown ed key", must(Sign(otherEd, "e1", good)), ErrInvalid},
		{"garbage", "not.a.token", ErrInvalid},
		{"empty", "", ErrInvalid},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.", ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject != "u1" || !slices.Equal(c.Orgs, good.Orgs) || !slices.Equal(c.WriteOrgs, good.WriteOrgs) ||
				!slices.Equal(c.Tables, good.Tables) || !c.Expires.Equal(good.Expires) {
				t.Fatalf("claims = %+v, want %+v", c, good)
			}
		})
	}
}

func TestVerifyRequiresExpAndSub(t *testing.T) {
	secret := []byte("k")
	v, err := NewVerifier(Config{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignHS256(secret, schema.Claims{Subject: "x"}); err == nil {
		t.Fatal("signed claims without exp")
	}
	// A hand-made token without exp.
	noExp := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.placeholder"
	if _, err := v.Verify(noExp); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

func TestLeeway(t *testing.T) {
	secret := []byte("k")
	v, _ := NewVerifier(Config{HS256Secret: secret, Leeway: time.Minute})
	tok, _ := SignHS256(secret, claims(-10*time.Second))
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"nothing", Config{}, ErrNoKeys},
		{"missing file", Config{JWKSFile: "/nonexistent/jwks.json"}, ErrBadJWKS},
		{"not json", Config{JWKSFile: writeJWKS(t)}, ErrBadJWKS},
		{"bad ed x", Config{JWKSFile: writeJWKS(t, map[string]string{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})}, ErrBadJWKS},
		{"bad rsa", Config{JWKSFile: writeJWKS(t, map[string]string{"kty": "RSA", "n": "AQAB", "e": "AQAB"})}, ErrBadJWKS},
		{"only enc keys", Config{JWKSFile: writeJWKS(t, map[string]string{"kty": "OKP", "crv": "Ed25519", "use": "enc", "x": "AAAA"})}, ErrBadJWKS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewVerifier(tc.cfg); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	secret := []byte("k")
	v, _ := NewVerifier(Config{HS256Secret: secret})
	tok, _ := SignHS256(secret, claims(time.Hour))
	f.Add(tok)
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s)
		if err == nil && c.Subject == "" {
			t.Fatal("accepted a token without subject")
		}
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
