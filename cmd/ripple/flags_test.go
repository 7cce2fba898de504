package main

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestParseFlagsEnvironmentTwins(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantURL  string
		wantWait time.Duration
		wantOrgs []string
		wantPos  []string
		wantErr  bool
	}{
		{name: "defaults", wantURL: "", wantWait: time.Second},
		{name: "env fills", env: map[string]string{"RIPPLE_DATABASE_URL": "postgres://e", "RIPPLE_REPLICA_WAIT": "3s"},
			wantURL: "postgres://e", wantWait: 3 * time.Second},
		{name: "flag wins over env", args: []string{"--database-url", "postgres://f"},
			env: map[string]string{"RIPPLE_DATABASE_URL": "postgres://e"}, wantURL: "postgres://f", wantWait: time.Second},
		{name: "list from env is comma separated", env: map[string]string{"RIPPLE_ORG": "a, b"},
			wantWait: time.Second, wantOrgs: []string{"a", "b"}},
		{name: "repeated flag", args: []string{"--org", "a", "--org", "b"}, wantWait: time.Second, wantOrgs: []string{"a", "b"}},
		{name: "positional between flags", args: []string{"todos", "--database-url", "postgres://f"},
			wantURL: "postgres://f", wantWait: time.Second, wantPos: []string{"todos"}},
		{name: "bad env value is a usage error", env: map[string]string{"RIPPLE_REPLICA_WAIT": "soon"}, wantErr: true},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			env := &cliEnv{stderr: &stderr, stdout: &bytes.Buffer{}, getenv: func(k string) string { return tt.env[k] }}
			fs := newFlagSet(env, "x", "")
			url := fs.String("database-url", "", "")
			wait := fs.Duration("replica-wait", time.Second, "")
			var orgs stringList
			fs.Var(&orgs, "org", "")
			pos, err := parseFlags(env, fs, tt.args)
			if tt.wantErr {
				if !errors.Is(err, errUsage) {
					t.Fatalf("want usage error, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *url != tt.wantURL || *wait != tt.wantWait {
				t.Fatalf("got url %q wait %v", *url, *wait)
			}
			if len(orgs) != len(tt.wantOrgs) {
				t.Fatalf("orgs %v, want %v", orgs, tt.wantOrgs)
			}
			for i := range orgs {
				if orgs[i] != tt.wantOrgs[i] {
					t.Fatalf("orgs %v, want %v", orgs, tt.wantOrgs)
				}
			}
			if len(pos) != len(tt.wantPos) || (len(pos) > 0 && pos[0] != tt.wantPos[0]) {
				t.Fatalf("positional %v, want %v", pos, tt.wantPos)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"nats-url": "RIPPLE_NATS_URL", "http-addr": "RIPPLE_HTTP_ADDR", "jwt-secret": "RIPPLE_JWT_SECRET"} {
		if got := envName(in); got != want {
			t.Errorf("envName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	var out, errb bytes.Buffer
	if code := realMain([]string{"frobnicate"}, &out, &errb, func(string) string { return "" }); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !bytes.Contains(errb.Bytes(), []byte(`unknown command "frobnicate"`)) {
		t.Fatalf("stderr: %s", errb.String())
	}
}
