package ingest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// TestPartHeader: the hand-written part encoding equals encoding/json's
// encoding of schema.Part.
func TestPartHeader(t *testing.T) {
	tests := []struct {
		name     string
		epoch    string
		org      string
		table    string
		seq      int
		last     bool
		lsn      uint64
		time     time.Time
		subjects []string
		ops      string
	}{
		{"first chunk", "e1", "acme", "todos", 0, false, 0, time.Time{}, nil, `{"op":"insert","row":{"a":1}}`},
		{"middle chunk", "e1", "acme", "todos", 7, false, 0, time.Time{}, nil, `{"op":"delete","key":{"a":1}}`},
		{"last", "e\"1", "a.b c\u00e9\"\\", "ripple.mutations", 2, true, 0x1_0016B3748, time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC),
			[]string{"sync.x.lists", "sync.x.todos"}, ``},
		{"last whole second", "e", "o", "t", 0, true, 0xAB, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), []string{"sync.o.t"}, `{"op":"insert","row":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &session{}
			s.epochJSON, _ = json.Marshal(tt.epoch)
			s.tx.xid = 1<<32 + 745
			s.tx.commitTime = tt.time
			p := &part{org: tt.org, table: tt.table, seq: tt.seq, ops: []byte(tt.ops)}
			var subj []byte
			if tt.subjects != nil {
				subj, _ = json.Marshal(tt.subjects)
			}
			got := s.appendPartHeader(nil, p, tt.last, tt.lsn, subj)
			got = append(append(append(got, `,"ops":[`...), tt.ops...), "]}"...)
			var ops []schema.Op
			if err := json.Unmarshal([]byte("["+tt.ops+"]"), &ops); err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(schema.Part{K: schema.KindPart, Epoch: tt.epoch, XID: s.tx.xid, Org: tt.org, Table: tt.table,
				Seq: tt.seq, Last: tt.last, LSN: schema.LSN(tt.lsn), CommitTime: tt.time, Subjects: tt.subjects, Ops: ops})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}
