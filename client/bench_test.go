package client

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkDecodePart measures decoding a shared part frame of 10 rows.
func BenchmarkDecodePart(b *testing.B) {
	var ops []string
	for i := range 10 {
		ops = append(ops, fmt.Sprintf(`{"op":"update","row":{"id":"%d","org":"acme","title":"title %d","done":false,"n":%d}}`, i, i, i))
	}
	frame := []byte(part("todos", 100, ops...))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeServerFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyCommit measures applying one transaction (a part of 10 row
// updates plus its commit) to a view of 10,000 rows with a change callback,
// with and without 10 pending mutations on top.
func BenchmarkApplyCommit(b *testing.B) {
	for _, pending := range []int{0, 10} {
		b.Run("pending="+strconv.Itoa(pending), func(b *testing.B) {
			h := newHarness(b)
			s, _ := h.c.Subscribe(b.Context(), "todos", "acme", OnChangeFunc(func(Change) {}))
			_ = s
			var snapOps []string
			for i := range 10000 {
				snapOps = append(snapOps, ins(strconv.Itoa(i), "t"))
			}
			h.feed(begin("s1", "full"), snap("s1", snapOps...), ready("s1", 0x10, 1))
			for i := range pending {
				if _, err := h.c.Mutate(b.Context(), "update", map[string]any{"table": "todos", "key": map[string]any{"id": strconv.Itoa(i)}, "set": map[string]any{"title": "p"}}); err != nil {
					b.Fatal(err)
				}
			}
			var frames [][2]string
			for n := range 1000 {
				var ops []string
				for j := range 10 {
					ops = append(ops, upd(strconv.Itoa((n*10+j)%10000), "v"+strconv.Itoa(n)))
				}
				frames = append(frames, [2]string{part("todos", 0, ops...), ""})
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n++
				xid, l := 1000+n, 0x100+n
				p := strings.Replace(frames[n%len(frames)][0], `"xid":"0"`, `"xid":"`+strconv.Itoa(xid)+`"`, 1)
				pf, err := decodeServerFrame([]byte(p))
				if err != nil {
					b.Fatal(err)
				}
				cf, _ := decodeServerFrame([]byte(commit(xid, l)))
				h.e.handle(pf)
				h.e.handle(cf)
				h.e.events.take()
			}
		})
	}
}
