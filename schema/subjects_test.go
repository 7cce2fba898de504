package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestEscapeToken(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"acme", "acme"},
		{"Org_1-2", "Org_1-2"},
		{"", "~"},
		{"a.b", "~YS5i"},
		{"a b", "~YSBi"},
		{"*", "~Kg"},
		{">", "~Pg"},
		{"~", "~fg"},
		{"ü", "~w7w"},
		{"🎉", "~8J-OiQ"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := EscapeToken(tt.in)
			if got != tt.want {
				t.Fatalf("EscapeToken(%q) = %q, want %q", tt.in, got, tt.want)
			}
			back, err := UnescapeToken(got)
			if err != nil || back != tt.in {
				t.Fatalf("UnescapeToken(%q) = %q, %v", got, back, err)
			}
		})
	}
}

func TestUnescapeTokenErrors(t *testing.T) {
	for _, tok := range []string{"", "a.b", "a b", "*", ">", "~!!", "~a=", "ü"} {
		if _, err := UnescapeToken(tok); !errors.Is(err, ErrBadSubject) {
			t.Errorf("UnescapeToken(%q) error = %v, want ErrBadSubject", tok, err)
		}
	}
}

func TestDataSubject(t *testing.T) {
	tests := []struct {
		org, table, want string
	}{
		{"acme", "todos", "sync.acme.todos"},
		{"acme.eu", "todos", "sync.~YWNtZS5ldQ.todos"},
		{"acme", "ripple.mutations", "sync.acme.~cmlwcGxlLm11dGF0aW9ucw"},
		{"", "t", "sync.~.t"},
	}
	for _, tt := range tests {
		got := DataSubject(tt.org, tt.table)
		if got != tt.want {
			t.Errorf("DataSubject(%q, %q) = %q, want %q", tt.org, tt.table, got, tt.want)
		}
		org, table, err := ParseDataSubject(got)
		if err != nil || org != tt.org || table != tt.table {
			t.Errorf("ParseDataSubject(%q) = %q, %q, %v", got, org, table, err)
		}
	}
	for _, bad := range []string{"", "sync", "sync.a", "sync.a.b.c", "other.a.b", "sync.a b.c", "sync.~!.c", "sync.*.t", "sync.a.>", "sync.~YQ.t", "sync.a.~dG9kb3M"} {
		if _, _, err := ParseDataSubject(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParseDataSubject(%q) error = %v", bad, err)
		}
	}
}

func FuzzEscapeToken(f *testing.F) {
	for _, s := range []string{"", "acme", "a.b", "~", "~YQ", "*", ">", "ü", "\x00\xff", "a b\tc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := EscapeToken(s)
		if tok == "" || strings.ContainsAny(tok, ". *>\t\r\n") {
			t.Fatalf("EscapeToken(%q) = %q is not a safe token", s, tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] >= 0x80 {
				t.Fatalf("EscapeToken(%q) = %q has non-ASCII", s, tok)
			}
		}
		back, err := UnescapeToken(tok)
		if err != nil || back != s {
			t.Fatalf("round trip %q -> %q -> %q, %v", s, tok, back, err)
		}
		// The subject round trips too.
		org, table, err := ParseDataSubject(DataSubject(s, s))
		if err != nil || org != s || table != s {
			t.Fatalf("subject round trip of %q: %q %q %v", s, org, table, err)
		}
		// Any token is rejected or is the canonical escape of what it
		// unescapes to, so two subjects never name the same string.
		if v, err := UnescapeToken(s); err == nil && EscapeToken(v) != s {
			t.Fatalf("UnescapeToken(%q) = %q, but its canonical escape is %q", s, v, EscapeToken(v))
		}
	})
}
