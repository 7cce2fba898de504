package load

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

func TestParseFrame(t *testing.T) {
	ct := time.Date(2026, 11, 23, 18, 0, 0, 123456000, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    Frame
		wantErr bool
	}{
		{"commit fast path", `{"type":"commit","xid":"746","lsn":"0/16B3900","time":"2026-11-23T18:00:00.123456Z","org":"acme"}`,
			Frame{Type: "commit", Time: ct}, false},
		{"commit with id", `{"type":"commit","id":"s1","xid":"746","lsn":"0/1","time":"2026-11-23T18:00:00.123456Z"}`,
			Frame{Type: "commit", Time: ct}, false},
		{"commit without time", `{"type":"commit","xid":"746","lsn":"0/1"}`, Frame{Type: "commit"}, false},
		{"commit bad time", `{"type":"commit","xid":"746","time":"yesterday"}`, Frame{}, true},
		{"part", `{"type":"part","table":"t","org":"o","xid":"1","seq":0,"last":true,"ops":[]}`, Frame{Type: "part"}, false},
		{"snapshot counts ops", `{"type":"snapshot","id":"s","ops":[{"op":"insert","row":{"id":"1"}},{"op":"insert","row":{"id":"2"}}]}`,
			Frame{Type: "snapshot", ID: "s", Ops: 2}, false},
		{"snapshot_begin", `{"type":"snapshot_begin","id":"s","mode":"full","key":["id"]}`, Frame{Type: "snapshot_begin", ID: "s", Mode: "full"}, false},
		{"error", `{"type":"error","id":"s","code":"forbidden","message":"no"}`, Frame{Type: "error", ID: "s", Code: "forbidden", Message: "no"}, false},
		{"resync", `{"type":"resync","id":"s","reason":"gap"}`, Frame{Type: "resync", ID: "s", Reason: "gap"}, false},
		{"type not first", `{"xid":"1","type":"commit","time":"2026-11-23T18:00:00.123456Z"}`, Frame{Type: "commit", Time: ct}, false},
		{"not json", `{"type":"ready"`, Frame{}, true},
		{"no type", `{"id":"s"}`, Frame{}, true},
		{"array", `[]`, Frame{}, true},
		{"empty", ``, Frame{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFrame([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, ErrBadFrame) {
					t.Fatalf("err = %v, want ErrBadFrame", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tc.want.Type || got.ID != tc.want.ID || got.Code != tc.want.Code || got.Message != tc.want.Message ||
				got.Reason != tc.want.Reason || got.Mode != tc.want.Mode || got.Ops != tc.want.Ops || !got.Time.Equal(tc.want.Time) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseFrame checks that ParseFrame never panics on arbitrary bytes, and
// that for a commit frame built from fuzzed fields the fast path reads the
// same type and time as a full JSON decode.
func FuzzParseFrame(f *testing.F) {
	f.Add([]byte(`{"type":"commit","xid":"1","lsn":"0/1","time":"2026-11-23T18:00:00.1Z"}`), "s1", "acme", int64(1795000000123456))
	f.Add([]byte(`{"type":"part","ops":[]}`), "", "", int64(0))
	f.Add([]byte(`{"type":"snapshot","ops":[1,2,3]}`), "a\"b", "o,\"time\":\"x", int64(-5))
	f.Fuzz(func(t *testing.T, raw []byte, id, org string, micros int64) {
		_, _ = ParseFrame(raw)

		ct := time.UnixMicro(micros % (1 << 50)).UTC()
		b, err := json.Marshal(schema.ServerFrame{Type: schema.FrameCommit, ID: id, XID: 7, LSN: 9, Time: ct.Format(time.RFC3339Nano), Org: org})
		if err != nil {
			t.Fatal(err)
		}
		var want struct {
			Type string `json:"type"`
			Time string `json:"time"`
		}
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		got, err := ParseFrame(b)
		if err != nil {
			t.Fatalf("ParseFrame(%s): %v", b, err)
		}
		wt, _ := time.Parse(time.RFC3339Nano, want.Time)
		if got.Type != want.Type || !got.Time.Equal(wt) {
			t.Fatalf("ParseFrame(%s) = %+v, want type %s time %v", b, got, want.Type, wt)
		}
	})
}
