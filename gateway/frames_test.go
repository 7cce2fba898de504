package gateway

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

func TestDecodeClientFrame(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
		typ  string
	}{
		{"auth", `{"type":"auth","token":"x"}`, true, "auth"},
		{"auth no token", `{"type":"auth"}`, false, ""},
		{"subscribe", `{"type":"subscribe","id":"s1","table":"todos","org":"acme"}`, true, "subscribe"},
		{"subscribe resume", `{"type":"subscribe","id":"s1","table":"todos","org":"acme","cursor":"12","lsn":"0/16B3748"}`, true, "subscribe"},
		{"subscribe bad cursor", `{"type":"subscribe","id":"s1","table":"todos","org":"acme","cursor":12}`, false, ""},
		{"subscribe bad lsn", `{"type":"subscribe","id":"s1","table":"todos","org":"acme","cursor":"1","lsn":"zz"}`, false, ""},
		{"subscribe lsn without cursor", `{"type":"subscribe","id":"s1","table":"todos","org":"acme","lsn":"0/1"}`, false, ""},
		{"subscribe no id", `{"type":"subscribe","table":"todos","org":"acme"}`, false, ""},
		{"subscribe no org", `{"type":"subscribe","id":"s","table":"todos"}`, false, ""},
		{"subscribe empty column", `{"type":"subscribe","id":"s","table":"t","org":"o","columns":[""]}`, false, ""},
		{"unsubscribe", `{"type":"unsubscribe","id":"s1"}`, true, "unsubscribe"},
		{"unsubscribe no id", `{"type":"unsubscribe"}`, false, ""},
		{"ping", `{"type":"ping"}`, true, "ping"},
		{"mutate", `{"type":"mutate","client_id":"c","mutation_id":1,"mutator":"insert","args":{}}`, true, "mutate"},
		{"mutate zero id", `{"type":"mutate","client_id":"c","mutation_id":0,"mutator":"insert"}`, false, ""},
		{"mutate no client", `{"type":"mutate","mutation_id":3,"mutator":"insert"}`, false, ""},
		{"unknown type", `{"type":"hello"}`, false, ""},
		{"no type", `{"id":"x"}`, false, ""},
		{"array", `[1,2]`, false, ""},
		{"not json", `hello`, false, ""},
		{"truncated", `{"type":"ping"`, false, ""},
		{"empty", ``, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClientFrame([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errBadFrame) {
				t.Fatalf("error does not wrap errBadFrame: %v", err)
			}
			if tc.ok && f.Type != tc.typ {
				t.Fatalf("type = %q", f.Type)
			}
		})
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"auth","token":"x"}`,
		`{"type":"subscribe","id":"s1","table":"todos","org":"acme","columns":["id"],"cursor":"12","lsn":"0/16B3748"}`,
		`{"type":"unsubscribe","id":"s1"}`,
		`{"type":"ping","id":"p"}`,
		`{"type":"mutate","client_id":"c","mutation_id":1,"mutator":"insert","args":{"table":"t"}}`,
		`{"type":"mutate","client_id":"c","mutation_id":-1}`,
		`{}`, `[]`, `"x"`, `{"type":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClientFrame(b)
		if err != nil {
			if !errors.Is(err, errBadFrame) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		switch fr.Type {
		case schema.FrameAuth:
			if fr.Token == "" {
				t.Fatal("auth without token accepted")
			}
		case schema.FrameSubscribe:
			if fr.ID == "" || fr.Table == "" || fr.Org == "" {
				t.Fatal("incomplete subscribe accepted")
			}
		case schema.FrameUnsubscribe:
			if fr.ID == "" {
				t.Fatal("unsubscribe without id accepted")
			}
		case schema.FrameMutate:
			if fr.ClientID == "" || fr.MutationID <= 0 || fr.Mutator == "" || !json.Valid(fr.Args) {
				t.Fatal("bad mutate accepted")
			}
		case schema.FramePing:
		default:
			t.Fatalf("unknown type %q accepted", fr.Type)
		}
	})
}

// The hand-built frames decode to schema.ServerFrame with the same values.
func TestEncodedFramesDecode(t *testing.T) {
	tm := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	p := &schema.RawPart{XID: 746, Org: `ac"me`, Table: "todos", Seq: 2, Last: true, Ops: json.RawMessage(`[{"op":"insert","row":{"id":"1"}}]`)}
	var f schema.ServerFrame
	for _, tc := range []struct {
		name  string
		b     []byte
		check func(schema.ServerFrame) bool
	}{
		{"shared part", encodePart("", p, p.Ops), func(f schema.ServerFrame) bool {
			return f.Type == "part" && f.ID == "" && f.Org == `ac"me` && f.XID == 746 && f.Seq == 2 && f.Last && len(f.Ops) == 1 && string(f.Ops[0].Row) == `{"id":"1"}`
		}},
		{"tagged part", encodePart("s1", p, nil), func(f schema.ServerFrame) bool { return f.ID == "s1" && len(f.Ops) == 0 }},
		{"commit", encodeCommit("", 746, 0x16B3900, tm, []int64{3, 4}), func(f schema.ServerFrame) bool {
			return f.Type == "commit" && f.XID == 746 && f.LSN == 0x16B3900 && f.Time == "2026-01-02T03:04:05.123456Z" && len(f.Confirmed) == 2
		}},
		{"checkpoint", encodeCheckpoint(`s"1`, schema.LSN(0x16B3A00).String(), schema.XID8(750).String()), func(f schema.ServerFrame) bool {
			want, _ := json.Marshal(schema.ServerFrame{Type: schema.FrameCheckpoint, ID: `s"1`, LSN: 0x16B3A00, Cursor: xidPtr(750)})
			return string(encodeCheckpoint(`s"1`, "0/16B3A00", "750")) == string(want) && f.Type == "checkpoint" && f.ID == `s"1` &&
				f.LSN == 0x16B3A00 && f.Cursor != nil && *f.Cursor == 750
		}},
		{"snapshot", encodeSnapshot("s", []schema.Op{{Op: "delete", Key: json.RawMessage(`{"id":"2"}`)}}), func(f schema.ServerFrame) bool {
			return f.Type == "snapshot" && f.ID == "s" && f.Ops[0].Op == "delete" && string(f.Ops[0].Key) == `{"id":"2"}`
		}},
	} {
		f = schema.ServerFrame{}
		if err := json.Unmarshal(tc.b, &f); err != nil {
			t.Fatalf("%s: %v: %s", tc.name, err, tc.b)
		}
		if !tc.check(f) {
			t.Fatalf("%s: decoded %+v from %s", tc.name, f, tc.b)
		}
	}
}
