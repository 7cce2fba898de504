package schema

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in   string
		want LSN
		err  bool
	}{
		{"0/0", 0, false},
		{"0/16B3748", 0x16B3748, false},
		{"16/B374D848", 0x16_B374D848, false},
		{"FFFFFFFF/FFFFFFFF", LSN(^uint64(0)), false},
		{"ffffffff/ffffffff", LSN(^uint64(0)), false},
		{"00000001/00000002", 1<<32 | 2, false},
		{"", 0, true},
		{"0", 0, true},
		{"/1", 0, true},
		{"1/", 0, true},
		{"1/2/3", 0, true},
		{"100000000/0", 0, true},
		{"0/100000000", 0, true},
		{"g/0", 0, true},
		{"-1/0", 0, true},
		{"+1/0", 0, true},
		{" 1/0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLSN(tt.in)
			if tt.err {
				if !errors.Is(err, ErrBadLSN) {
					t.Fatalf("ParseLSN(%q) error = %v, want ErrBadLSN", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseLSN(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestLSNString(t *testing.T) {
	tests := []struct {
		in   LSN
		want string
	}{
		{0, "0/0"},
		{0x16B3748, "0/16B3748"},
		{0x16_B374D848, "16/B374D848"},
		{LSN(^uint64(0)), "FFFFFFFF/FFFFFFFF"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("LSN(%d).String() = %q, want %q", uint64(tt.in), got, tt.want)
		}
	}
}

func TestLSNJSON(t *testing.T) {
	type msg struct {
		L LSN  `json:"l"`
		X XID8 `json:"x"`
	}
	in := msg{L: 0x16_B374D848, X: 18446744073709551615}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"l":"16/B374D848","x":"18446744073709551615"}` {
		t.Fatalf("marshal = %s", b)
	}
	var out msg
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("unmarshal = %+v, %v", out, err)
	}
	for _, bad := range []string{`{"l":"zz"}`, `{"x":"-1"}`, `{"x":"1.5"}`, `{"x":"18446744073709551616"}`} {
		if err := json.Unmarshal([]byte(bad), &out); err == nil {
			t.Errorf("unmarshal %s: no error", bad)
		}
	}
}

func TestParseXID8(t *testing.T) {
	tests := []struct {
		in   string
		want XID8
		err  bool
	}{
		{"0", 0, false},
		{"745", 745, false},
		{"18446744073709551615", 18446744073709551615, false},
		{"18446744073709551616", 0, true},
		{"", 0, true},
		{"-1", 0, true},
		{"0x10", 0, true},
		{"1 ", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseXID8(tt.in)
		if tt.err {
			if !errors.Is(err, ErrBadXID) {
				t.Errorf("ParseXID8(%q) error = %v, want ErrBadXID", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want || got.String() != tt.in {
			t.Errorf("ParseXID8(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "0/16B3748", "FFFFFFFF/FFFFFFFF", "1/", "/", "", "1/2/3", "100000000/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			if !errors.Is(err, ErrBadLSN) {
				t.Fatalf("ParseLSN(%q) error %v does not wrap ErrBadLSN", s, err)
			}
			return
		}
		// Whatever parses prints back to something that parses to the same LSN.
		back, err := ParseLSN(l.String())
		if err != nil || back != l {
			t.Fatalf("ParseLSN(%q) = %v; reparse of %q = %v, %v", s, l, l.String(), back, err)
		}
	})
}
