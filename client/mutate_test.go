package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFramesSentAcrossReconnects(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, h *harness)
		want []string // frames sent by the last reconnect, in order
	}{
		{
			name: "a subscription never ready resubscribes without cursor",
			run:  func(t *testing.T, h *harness) { h.sub("todos/acme") },
			want: []string{`{"type":"subscribe","id":"s1","table":"todos","org":"acme"}`},
		},
		{
			name: "a ready subscription resumes with its cursor and lsn; columns are kept",
			run: func(t *testing.T, h *harness) {
				h.sub("todos/acme", Columns("id", "title"))
				h.sub("lists/acme")
				h.feed(begin("s1", "full"), ready("s1", 0x20, 100), checkpoint("s1", 0x30, 120))
			},
			want: []string{
				`{"type":"subscribe","id":"s1","table":"todos","org":"acme","columns":["id","title"],"cursor":"120","lsn":"0/30"}`,
				`{"type":"subscribe","id":"s2","table":"lists","org":"acme"}`,
			},
		},
		{
			name: "pending mutations without a reply are re-sent in id order",
			run: func(t *testing.T, h *harness) {
				h.sub("todos/acme")
				for i := range 4 {
					if _, err := h.c.Mutate(t.Context(), "custom", map[string]int{"n": i}); err != nil {
						t.Fatal(err)
					}
				}
				h.feed(reply(2, "applied", 500, ""))
			},
			want: []string{
				`{"type":"subscribe","id":"s1","table":"todos","org":"acme"}`,
				`{"type":"mutate","client_id":"c1","mutation_id":1,"mutator":"custom","args":{"n":0}}`,
				`{"type":"mutate","client_id":"c1","mutation_id":3,"mutator":"custom","args":{"n":2}}`,
				`{"type":"mutate","client_id":"c1","mutation_id":4,"mutator":"custom","args":{"n":3}}`,
			},
		},
		{
			name: "a closed subscription is not resubscribed",
			run: func(t *testing.T, h *harness) {
				h.sub("todos/acme").Close()
				h.sub("lists/acme")
			},
			want: []string{`{"type":"subscribe","id":"s2","table":"lists","org":"acme"}`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.run(t, h)
			h.sent()
			h.disconnect()
			h.connect()
			if got := h.sent(); !slices.Equal(got, tc.want) {
				t.Fatalf("sent:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestMutationIDsIncreaseAndAreSentOnce(t *testing.T) {
	h := newHarness(t)
	h.disconnect()
	for i := 1; i <= 3; i++ {
		p, err := h.c.Mutate(t.Context(), "x", json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if p.ID() != int64(i) {
			t.Fatalf("mutation id %d, want %d", p.ID(), i)
		}
	}
	h.connect()
	if got := len(h.sent()); got != 3 {
		t.Fatalf("sent %d frames on connect, want 3", got)
	}
	if _, err := h.c.Mutate(t.Context(), "x", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := h.sent(); len(got) != 1 || got[0] != `{"type":"mutate","client_id":"c1","mutation_id":4,"mutator":"x","args":{}}` {
		t.Fatalf("sent %q", got)
	}
	if _, err := h.c.Mutate(t.Context(), "x", json.RawMessage(`{bad`)); err == nil {
		t.Fatal("invalid JSON args accepted")
	}
	if len(h.c.Pending()) != 4 {
		t.Fatalf("bad args changed the pending store: %d", len(h.c.Pending()))
	}
}

func TestNonFinalRejectionResends(t *testing.T) {
	h := newHarness(t)
	h.sub("todos/acme")
	h.feed(begin("s1", "full"), ready("s1", 0x20, 100))
	if _, err := h.c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "org": "acme", "row": map[string]any{"id": "1"}}); err != nil {
		t.Fatal(err)
	}
	h.sent()
	h.feed(reply(1, "rejected", 0, "unavailable"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := h.sent()
		if len(got) == 1 && got[0] == `{"type":"mutate","client_id":"c1","mutation_id":1,"mutator":"insert","args":{"org":"acme","row":{"id":"1"},"table":"todos"}}` {
			break
		}
		if len(got) != 0 || time.Now().After(deadline) {
			t.Fatalf("resend: got %q", got)
		}
		select {
		case <-h.out.signal:
		case <-time.After(time.Until(deadline)):
		}
	}
}

// A custom mutator with a business rule: transfers may not overdraw.
func transfer(tx *LocalTx, args json.RawMessage) error {
	var a struct {
		Org      string `json:"org"`
		From, To string
		Amount   int64
	}
	if err := json.Unmarshal(args, &a); err != nil {
		return err
	}
	from, ok1 := tx.Get("accounts", a.Org, a.From)
	to, ok2 := tx.Get("accounts", a.Org, a.To)
	if !ok1 || !ok2 {
		return errors.New("unknown account")
	}
	fb, _ := strconv.ParseInt(from["balance"].(string), 10, 64)
	tb, _ := strconv.ParseInt(to["balance"].(string), 10, 64)
	if fb < a.Amount {
		return errors.New("insufficient funds")
	}
	from["balance"] = strconv.FormatInt(fb-a.Amount, 10)
	to["balance"] = strconv.FormatInt(tb+a.Amount, 10)
	if err := tx.Put("accounts", a.Org, from); err != nil {
		return err
	}
	return tx.Put("accounts", a.Org, to)
}

func acct(id string, bal int) string {
	return fmt.Sprintf(`{"op":"insert","row":{"id":%q,"balance":"%d"}}`, id, bal)
}

func balances(s *Subscription) string {
	out := ""
	for _, r := range s.Rows() {
		out += fmt.Sprintf("%s=%s ", r["id"], r["balance"])
	}
	return out
}

func TestCustomMutator(t *testing.T) {
	h := newHarness(t)
	h.c.RegisterMutator("transfer", transfer)
	s := h.sub("accounts/bank")
	h.feed(begin("s1", "full"), snap("s1", acct("a", 100), acct("b", 0)), ready("s1", 0x20, 100))
	tr := func(amount int) (*Pending, error) {
		return h.c.Mutate(t.Context(), "transfer", map[string]any{"org": "bank", "from": "a", "to": "b", "amount": amount})
	}
	p1, err := tr(70)
	if err != nil {
		t.Fatal(err)
	}
	if got := balances(s); got != "a=30 b=70 " {
		t.Fatalf("after first transfer: %s", got)
	}
	// The local rule refuses a second transfer that would overdraw.
	if _, err := tr(50); !errors.Is(err, ErrOptimistic) {
		t.Fatalf("overdraft: err %v, want ErrOptimistic", err)
	}
	if got := len(h.c.Pending()); got != 1 {
		t.Fatalf("refused mutation is pending: %d", got)
	}
	// Another client's deposit commits first: the pending transfer is
	// re-applied on top of it.
	h.feed(`{"type":"part","table":"accounts","org":"bank","xid":"150","ops":[{"op":"update","row":{"id":"a","balance":"200"}}]}`, commit(150, 0x30))
	if got := balances(s); got != "a=130 b=70 " {
		t.Fatalf("rebased: %s", got)
	}
	// The writer rejects the transfer after all: rolled back.
	h.feed(reply(p1.ID(), "rejected", 0, "insufficient_funds"))
	if got := balances(s); got != "a=200 b=0 " {
		t.Fatalf("rolled back: %s", got)
	}
	var me *MutationError
	if err := p1.Wait(t.Context()); !errors.As(err, &me) || me.Code != "insufficient_funds" {
		t.Fatalf("Wait: %v", err)
	}
}

func TestSharedSubscriptionsAndColumns(t *testing.T) {
	h := newHarness(t)
	all := h.sub("todos/acme")
	narrow := h.sub("todos/acme", Columns("title"))
	h.feed(begin("s1", "full"), snap("s1", `{"op":"insert","row":{"id":"1","title":"a","done":false}}`), ready("s1", 0x20, 100))
	if got := rowsJSON(narrow.Rows()); !slices.Equal(got, []string{`{"id":"1","title":"a"}`}) {
		t.Fatalf("narrow rows %q", got)
	}
	if got := rowsJSON(all.Rows()); !slices.Equal(got, []string{`{"done":false,"id":"1","title":"a"}`}) {
		t.Fatalf("all rows %q", got)
	}
	h.takeChanges()
	// A change outside the narrow columns is not a change of the narrow view.
	h.feed(`{"type":"part","table":"todos","org":"acme","xid":"101","ops":[{"op":"update","row":{"id":"1","title":"a","done":true}}]}`, commit(101, 0x30))
	if got := h.takeChanges(); len(got) != 1 || got[0] != `update todos/acme {"done":true,"id":"1","title":"a"} @0/30` {
		t.Fatalf("changes %q", got)
	}
	// Only one wire subscription; it ends with the last handle.
	if got := h.sent(); len(got) != 1 {
		t.Fatalf("sent %q, want one subscribe", got)
	}
	all.Close()
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("unsubscribed while a handle remains: %q", got)
	}
	narrow.Close()
	if got := h.sent(); !slices.Equal(got, []string{`{"type":"unsubscribe","id":"s1"}`}) {
		t.Fatalf("sent %q", got)
	}
	// A narrow wire subscription cannot serve a wider one.
	h.sub("lists/acme", Columns("title"))
	if _, err := h.c.Subscribe(t.Context(), "lists", "acme"); !errors.Is(err, ErrColumnConflict) {
		t.Fatalf("err %v, want ErrColumnConflict", err)
	}
}

func TestSubscriptionErrors(t *testing.T) {
	cases := []struct {
		code      string
		terminal  bool
		wantFrame string // frame sent in response (empty: none)
	}{
		{code: "forbidden", terminal: true},
		{code: "unknown_table", terminal: true},
		{code: "bad_columns", terminal: true},
		{code: "replica_lag"},
		{code: "bad_cursor", wantFrame: `{"type":"subscribe","id":"s1","table":"todos","org":"acme"}`},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			h := newHarness(t)
			s := h.sub("todos/acme")
			h.sent()
			h.feed(fmt.Sprintf(`{"type":"error","id":"s1","code":%q,"message":"no"}`, tc.code))
			got := h.sent()
			if tc.wantFrame != "" && !slices.Equal(got, []string{tc.wantFrame}) || tc.wantFrame == "" && len(got) != 0 {
				t.Fatalf("sent %q", got)
			}
			ctx, cancel := contextWithTimeout(t, 50*time.Millisecond)
			defer cancel()
			err := s.WaitReady(ctx)
			var se *ServerError
			if tc.terminal {
				if !errors.As(err, &se) || se.Code != tc.code {
					t.Fatalf("WaitReady = %v, want ServerError %s", err, tc.code)
				}
				// Frames for the ended subscription change nothing.
				h.feed(begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 1))
				if s.Len() != 0 {
					t.Fatal("ended subscription got rows")
				}
			} else if err == nil {
				t.Fatal("WaitReady returned nil before ready")
			}
		})
	}
}

// A rejection is recorded in a transaction too, so its commit may confirm the
// mutation before the reply arrives: the optimistic effect leaves at that
// commit, and the reply (here after a reconnect and a re-send) gives the
// outcome.
func TestConfirmedBeforeRejection(t *testing.T) {
	h := newHarness(t)
	s := h.sub("todos/acme")
	h.feed(begin("s1", "full"), ready("s1", 0x20, 100))
	p, err := h.c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "org": "acme", "row": map[string]any{"id": "1", "title": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 1 {
		t.Fatal("optimistic insert not shown")
	}
	h.feed(commit(300, 0x30, 1))
	if s.Len() != 0 || len(h.c.Pending()) != 0 {
		t.Fatalf("rejected mutation still shown (%d rows, %d pending)", s.Len(), len(h.c.Pending()))
	}
	select {
	case <-p.Done():
		t.Fatal("resolved before its reply")
	default:
	}
	h.sent()
	h.disconnect()
	h.connect()
	if got := h.sent(); len(got) != 2 || !strings.Contains(got[1], `"mutation_id":1`) {
		t.Fatalf("re-sent %q", got)
	}
	h.feed(reply(1, "rejected", 0, "forbidden"))
	var me *MutationError
	if err := p.Wait(t.Context()); !errors.As(err, &me) || me.Code != "forbidden" {
		t.Fatalf("Wait = %v", err)
	}
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("sent after the outcome: %q", got)
	}
}
