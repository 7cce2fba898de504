package client

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeServerFrame feeds arbitrary bytes to the server-frame decoder and
// every accepted frame to an engine with live and staging subscriptions: no
// input may panic, an accepted frame must re-encode to a frame the decoder
// accepts again, and a rejected one is reported as ErrBadFrame.
func FuzzDecodeServerFrame(f *testing.F) {
	seeds := []string{
		`{"type":"auth_ok","sub":"u","exp":1}`,
		begin("s1", "full"), begin("s2", "resume"),
		snap("s1", ins("1", "a"), del("2")),
		ready("s1", 0x20, 100), checkpoint("s1", 0x30, 101),
		part("todos", 100, ins("3", "c"), upd("1", "b")), commit(100, 0x40, 1, 2),
		`{"type":"resync","id":"s1","reason":"gap"}`,
		`{"type":"error","id":"s1","code":"forbidden","message":"x"}`,
		`{"type":"mutation","client_id":"c1","mutation_id":1,"status":"applied","xid":"5"}`,
		`{"type":"pong"}`, `{"type":"part","table":"t","org":"o","xid":"1","ops":[{"op":"insert","row":[]}]}`,
		`{"type":"commit","xid":"1","lsn":"0/1"} {}`, `{"type":"snapshot","id":"s1","ops":[{"op":"delete","key":{"x":1}}]}`,
		`{"type":"commit","xid":"99999999999999999999","lsn":"G/1"}`, `null`, `[]`, `{"type":"ready","id":"s1","cursor":"1","lsn":"0/0"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeServerFrame(data)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		b, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeServerFrame(b); err != nil {
			t.Fatalf("re-encoded frame %s rejected: %v", b, err)
		}
		h := newHarness(t)
		h.c.Subscribe(t.Context(), "todos", "acme")
		h.c.Subscribe(t.Context(), "t", "o")
		for _, s := range []string{begin("s1", "full"), ready("s1", 0x10, 1), begin("s2", "full")} {
			g, _ := decodeServerFrame([]byte(s))
			_ = h.e.handle(g)
		}
		_ = h.e.handle(fr)
		_ = h.e.handle(fr)
		_ = h.takeChanges()
	})
}
