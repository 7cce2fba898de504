package client

import (
	"errors"
	"slices"
	"testing"
)

// vstep is one step of a view scenario: feed frames and/or act, then check.
type vstep struct {
	feed    []string
	act     func(t *testing.T, h *harness, subs []*Subscription)
	rows    map[int][]string // subscription index -> visible rows (unchecked when absent)
	synced  map[int][]string // subscription index -> synced rows
	changes []string         // changes delivered during the step (nil: unchecked)
	pending []int64          // ids of the pending mutations (nil: unchecked)
}

var none = []string{}

func mutateInsert(id, title string) func(*testing.T, *harness, []*Subscription) {
	return func(t *testing.T, h *harness, _ []*Subscription) {
		if _, err := h.c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "org": "acme", "row": map[string]any{"id": id, "title": title}}); err != nil {
			t.Fatal(err)
		}
	}
}

func mutateUpdate(id, title string) func(*testing.T, *harness, []*Subscription) {
	return func(t *testing.T, h *harness, _ []*Subscription) {
		if _, err := h.c.Mutate(t.Context(), "update", map[string]any{"table": "todos", "key": map[string]any{"id": id}, "set": map[string]any{"title": title}}); err != nil {
			t.Fatal(err)
		}
	}
}

func reconnect(t *testing.T, h *harness, _ []*Subscription) {
	h.disconnect()
	h.connect()
}

func TestViewMerge(t *testing.T) {
	cases := []struct {
		name  string
		subs  []string
		steps []vstep
	}{
		{
			name: "full snapshot and live commits are staged until ready",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a"), ins("2", "b"))}, rows: map[int][]string{0: none}, changes: none},
				{feed: []string{part("todos", 100, ins("3", "c"), upd("1", "a2")), commit(100, 0x20)}, rows: map[int][]string{0: none}, changes: none},
				{
					feed:    []string{ready("s1", 0x20, 100)},
					rows:    map[int][]string{0: {row("1", "a2"), row("2", "b"), row("3", "c")}},
					changes: []string{`insert todos/acme {"id":"1","title":"a2"} @0/20`, `insert todos/acme {"id":"2","title":"b"} @0/20`, `insert todos/acme {"id":"3","title":"c"} @0/20`},
				},
			},
		},
		{
			name: "a commit applies all its parts at once to every subscription",
			subs: []string{"todos/acme", "lists/acme", "todos/other"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), ready("s1", 0x10, 90), begin("s2", "full"), ready("s2", 0x10, 90), begin("s3", "full"), ready("s3", 0x10, 90)}, changes: none},
				{feed: []string{part("todos", 101, ins("1", "a")), part("lists", 101, ins("9", "l"))}, rows: map[int][]string{0: none, 1: none}, changes: none},
				{
					feed:    []string{part("todos/other", 101, ins("7", "o")), commit(101, 0x30)},
					rows:    map[int][]string{0: {row("1", "a")}, 1: {row("9", "l")}, 2: {row("7", "o")}},
					changes: []string{`insert todos/acme {"id":"1","title":"a"} @0/30`, `insert lists/acme {"id":"9","title":"l"} @0/30`, `insert todos/other {"id":"7","title":"o"} @0/30`},
				},
				{feed: []string{part("todos", 102, del("1")), part("lists", 102, upd("9", "l2")), commit(102, 0x40)}, rows: map[int][]string{0: none, 1: {row("9", "l2")}}},
			},
		},
		{
			name: "commits at or below the applied LSN are dropped",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 100)}},
				{feed: []string{part("todos", 99, upd("1", "old")), commit(99, 0x20)}, rows: map[int][]string{0: {row("1", "a")}}, changes: none},
				{feed: []string{part("todos", 101, upd("1", "b")), commit(101, 0x30)}, rows: map[int][]string{0: {row("1", "b")}}, changes: []string{`update todos/acme {"id":"1","title":"b"} @0/30`}},
				{feed: []string{part("todos", 101, upd("1", "dup")), commit(101, 0x30)}, rows: map[int][]string{0: {row("1", "b")}}, changes: none},
				{feed: []string{part("todos", 100, upd("1", "older")), commit(100, 0x28)}, rows: map[int][]string{0: {row("1", "b")}}, changes: none},
			},
		},
		{
			name: "resume after reconnect keeps the view until ready, then applies on top",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a"), ins("2", "b")), ready("s1", 0x20, 100), checkpoint("s1", 0x20, 105)}},
				{act: reconnect, rows: map[int][]string{0: {row("1", "a"), row("2", "b")}}},
				{
					feed: []string{begin("s1", "resume"), snap("s1", upd("1", "A"), del("2")), part("todos", 110, ins("3", "c")), commit(110, 0x40)},
					rows: map[int][]string{0: {row("1", "a"), row("2", "b")}}, changes: none,
				},
				{
					feed:    []string{ready("s1", 0x40, 111)},
					rows:    map[int][]string{0: {row("1", "A"), row("3", "c")}},
					changes: []string{`update todos/acme {"id":"1","title":"A"} @0/40`, `delete todos/acme {"id":"2"} @0/40`, `insert todos/acme {"id":"3","title":"c"} @0/40`},
				},
			},
		},
		{
			name: "resync keeps the view; a full snapshot then replaces it",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a"), ins("2", "b")), ready("s1", 0x20, 100)}},
				{feed: []string{`{"type":"resync","id":"s1","reason":"truncate"}`, begin("s1", "full"), snap("s1", ins("2", "b2"))}, rows: map[int][]string{0: {row("1", "a"), row("2", "b")}}, changes: none},
				{feed: []string{part("todos", 101, upd("2", "b2")), commit(101, 0x30)}, rows: map[int][]string{0: {row("1", "a"), row("2", "b")}}, changes: none},
				{
					feed:    []string{ready("s1", 0x30, 101)},
					rows:    map[int][]string{0: {row("2", "b2")}},
					changes: []string{`delete todos/acme {"id":"1"} @0/30`, `update todos/acme {"id":"2","title":"b2"} @0/30`},
				},
			},
		},
		{
			name: "a staged commit at or below the visible LSN is dropped",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x40, 100)}},
				{act: reconnect},
				{feed: []string{begin("s1", "resume"), part("todos", 90, upd("1", "stale")), commit(90, 0x30), ready("s1", 0x40, 100)}, rows: map[int][]string{0: {row("1", "a")}}, changes: none},
			},
		},
		{
			name: "catch-up commits tagged with a subscription id apply to it only, even below the stream's LSN",
			subs: []string{"todos/acme", "lists/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), ready("s1", 0x20, 100), part("todos", 105, ins("1", "a")), commit(105, 0x50)}, rows: map[int][]string{0: {row("1", "a")}}},
				{
					feed: []string{begin("s2", "full"), snap("s2", ins("8", "x")),
						tagged("s2", part("lists", 90, ins("9", "l"))), `{"type":"commit","id":"s2","xid":"90","lsn":"0/30"}`,
						tagged("s2", part("lists", 105, upd("8", "y"))), `{"type":"commit","id":"s2","xid":"105","lsn":"0/50"}`},
					rows: map[int][]string{0: {row("1", "a")}, 1: none}, changes: none,
				},
				{feed: []string{ready("s2", 0x50, 101)}, rows: map[int][]string{0: {row("1", "a")}, 1: {row("8", "y"), row("9", "l")}}},
				// A live subscription with a column list gets parts tagged with
				// its id, closed by the shared commit.
				{feed: []string{tagged("s2", part("lists", 106, del("9"))), part("todos", 106, del("1")), commit(106, 0x60)}, rows: map[int][]string{0: none, 1: {row("8", "y")}}},
				// A tagged commit for a live subscription at or below its LSN
				// changes nothing.
				{feed: []string{tagged("s2", part("lists", 107, del("8"))), `{"type":"commit","id":"s2","xid":"107","lsn":"0/60"}`}, rows: map[int][]string{1: {row("8", "y")}}, changes: none},
			},
		},
		{
			name: "pending insert shows at once and leaves exactly at its commit: no flicker",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 100)}, changes: []string{`insert todos/acme {"id":"1","title":"a"} @0/20`}},
				{
					act:     mutateInsert("5", "p"),
					rows:    map[int][]string{0: {row("1", "a"), row("5", "p")}},
					synced:  map[int][]string{0: {row("1", "a")}},
					changes: []string{`insert todos/acme {"id":"5","title":"p"} @0/20 local`},
					pending: []int64{1},
				},
				{feed: []string{reply(1, "applied", 200, ""), part("todos", 200, ins("5", "p"))}, rows: map[int][]string{0: {row("1", "a"), row("5", "p")}}, synced: map[int][]string{0: {row("1", "a")}}, changes: none, pending: []int64{1}},
				{
					feed:    []string{commit(200, 0x50, 1)},
					rows:    map[int][]string{0: {row("1", "a"), row("5", "p")}},
					synced:  map[int][]string{0: {row("1", "a"), row("5", "p")}},
					changes: none, pending: []int64{},
				},
				{feed: []string{reply(1, "applied", 200, "")}, rows: map[int][]string{0: {row("1", "a"), row("5", "p")}}, changes: none, pending: []int64{}},
			},
		},
		{
			name: "confirmation before the reply also settles; the late reply is harmless",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), ready("s1", 0x20, 100)}},
				{act: mutateInsert("5", "p"), pending: []int64{1}},
				{feed: []string{part("todos", 200, ins("5", "p")), commit(200, 0x50, 1)}, synced: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{}},
				{feed: []string{reply(1, "applied", 200, ""), reply(1, "rejected", 0, "forbidden")}, rows: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{}},
			},
		},
		{
			name: "a pending update stays on top of concurrent commits until its own",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a"), ins("2", "b")), ready("s1", 0x20, 100)}},
				{act: mutateUpdate("1", "X"), rows: map[int][]string{0: {row("1", "X"), row("2", "b")}}, changes: []string{`update todos/acme {"id":"1","title":"X"} @0/20 local`}},
				{feed: []string{part("todos", 201, upd("1", "other"), upd("2", "b2")), commit(201, 0x30)}, rows: map[int][]string{0: {row("1", "X"), row("2", "b2")}}, changes: []string{`update todos/acme {"id":"2","title":"b2"} @0/30`}},
				{feed: []string{reply(1, "applied", 202, ""), part("todos", 202, upd("1", "X")), commit(202, 0x40, 1)}, rows: map[int][]string{0: {row("1", "X"), row("2", "b2")}}, synced: map[int][]string{0: {row("1", "X"), row("2", "b2")}}, changes: none, pending: []int64{}},
			},
		},
		{
			name: "a rejected mutation is rolled back at once",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 100)}},
				{act: mutateUpdate("1", "X"), rows: map[int][]string{0: {row("1", "X")}}},
				{act: mutateInsert("2", "new"), rows: map[int][]string{0: {row("1", "X"), row("2", "new")}}, pending: []int64{1, 2}},
				{
					feed:    []string{reply(1, "rejected", 0, "forbidden")},
					rows:    map[int][]string{0: {row("1", "a"), row("2", "new")}},
					changes: []string{`update todos/acme {"id":"1","title":"a"} @0/20 local`},
					pending: []int64{2},
					act: func(t *testing.T, h *harness, _ []*Subscription) {
						// Checked in TestRejectionReported; here just the view.
					},
				},
				{feed: []string{reply(1, "rejected", 0, "forbidden")}, changes: none, pending: []int64{2}},
			},
		},
		{
			name: "a non-final rejection keeps the optimistic state",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), ready("s1", 0x20, 100)}},
				{act: mutateInsert("5", "p")},
				{feed: []string{reply(1, "rejected", 0, "unavailable")}, rows: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{1}},
				{feed: []string{reply(1, "rejected", 0, "mutation_out_of_order")}, rows: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{1}},
			},
		},
		{
			name: "an applied mutation whose commit was missed is confirmed by the cursor",
			subs: []string{"todos/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), ready("s1", 0x20, 100)}},
				{act: mutateInsert("5", "p")},
				{act: reconnect},
				{feed: []string{reply(1, "applied", 300, "")}, pending: []int64{1}},
				{feed: []string{begin("s1", "resume"), snap("s1", ins("5", "p")), ready("s1", 0x60, 300)}, rows: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{1}},
				{feed: []string{checkpoint("s1", 0x60, 301)}, rows: map[int][]string{0: {row("5", "p")}}, synced: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{}},
			},
		},
		{
			name: "a confirmation waits while another visible view catches up",
			subs: []string{"todos/acme", "lists/acme"},
			steps: []vstep{
				{feed: []string{begin("s1", "full"), ready("s1", 0x20, 100), begin("s2", "full"), ready("s2", 0x20, 100)}},
				{act: mutateInsert("5", "p"), pending: []int64{1}},
				{feed: []string{`{"type":"resync","id":"s1","reason":"gap"}`, begin("s1", "resume"), part("todos", 200, ins("5", "p")), commit(200, 0x50, 1)}, rows: map[int][]string{0: {row("5", "p")}}, synced: map[int][]string{0: none}, changes: none, pending: []int64{1}},
				{feed: []string{ready("s1", 0x50, 150)}, rows: map[int][]string{0: {row("5", "p")}}, synced: map[int][]string{0: {row("5", "p")}}, changes: none, pending: []int64{}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			var subs []*Subscription
			for _, name := range tc.subs {
				subs = append(subs, h.sub(name))
			}
			for i, st := range tc.steps {
				h.feed(st.feed...)
				if st.act != nil {
					st.act(t, h, subs)
				}
				for si, want := range st.rows {
					if got := rowsJSON(subs[si].Rows()); !slices.Equal(got, want) {
						t.Fatalf("step %d: sub %d rows:\n got %q\nwant %q", i, si, got, want)
					}
					if got := subs[si].Len(); got != len(want) {
						t.Fatalf("step %d: sub %d Len %d, want %d", i, si, got, len(want))
					}
				}
				for si, want := range st.synced {
					if got := rowsJSON(subs[si].Synced()); !slices.Equal(got, want) {
						t.Fatalf("step %d: sub %d synced:\n got %q\nwant %q", i, si, got, want)
					}
				}
				got := h.takeChanges()
				if st.changes != nil && !slices.Equal(got, st.changes) && !(len(got) == 0 && len(st.changes) == 0) {
					t.Fatalf("step %d: changes:\n got %q\nwant %q", i, got, st.changes)
				}
				if st.pending != nil {
					var ids []int64
					for _, p := range h.c.Pending() {
						ids = append(ids, p.ID())
					}
					if !slices.Equal(ids, st.pending) && !(len(ids) == 0 && len(st.pending) == 0) {
						t.Fatalf("step %d: pending %v, want %v", i, ids, st.pending)
					}
				}
			}
		})
	}
}

func TestRejectionReported(t *testing.T) {
	h := newHarness(t)
	s := h.sub("todos/acme")
	h.feed(begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 100))
	p, err := h.c.Mutate(t.Context(), "delete", map[string]any{"table": "todos", "key": map[string]any{"id": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rowsJSON(s.Rows()); len(got) != 0 {
		t.Fatalf("optimistic delete not shown: %q", got)
	}
	select {
	case <-p.Done():
		t.Fatal("pending done before any reply")
	default:
	}
	h.feed(reply(1, "rejected", 0, "constraint_violation"))
	err = p.Wait(t.Context())
	var me *MutationError
	if !errors.As(err, &me) || me.Code != "constraint_violation" || me.Message != "m" || me.ID != 1 {
		t.Fatalf("Wait = %v, want MutationError constraint_violation", err)
	}
	if got := rowsJSON(s.Rows()); !slices.Equal(got, []string{row("1", "a")}) {
		t.Fatalf("rollback: rows %q", got)
	}
}
