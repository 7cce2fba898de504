package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// Review (BRIEF "Writes": a mutation record "reaches only the client that
// wrote it, never other clients of the organisation"). The client id is
// chosen by the client and is not bound to the token's user anywhere
// (gateway conn.onMutate / hub.addConfirm, writer): another user of the
// organisation who sends a mutate frame with the victim's client id is
// registered for the victim's confirmations and, by re-sending one of the
// victim's mutation ids, receives the victim's recorded reply (status and
// result) from the writer's exactly-once table.
func TestReviewConfirmationNotLeakedToAnotherUser(t *testing.T) {
	e := newEnv(t, envOpts{})
	startWriter(t, e)
	alice := dial(t, e).start()
	alice.auth(token(t, schema.Claims{Subject: "alice", Orgs: []string{"acme"}, WriteOrgs: []string{"acme"}}))
	alice.subscribe("s", "accounts", "acme")
	mallory := dial(t, e).start()
	mallory.auth(token(t, schema.Claims{Subject: "mallory", Orgs: []string{"acme"}, WriteOrgs: []string{"acme"}}))
	mallory.subscribe("s", "accounts", "acme")
	alice.waitReady("s", 1)
	mallory.waitReady("s", 1)

	alice.sendJSON(mutateFrame("alice-device", 1, `{"table":"accounts","row":{"org":"acme","id":"1","balance":"11"}}`))
	ra := alice.waitFrame(10*time.Second, "alice's reply 1", func(f schema.ServerFrame) bool {
		return f.Type == schema.FrameMutation && f.MutationID == 1
	})
	if ra.Status != schema.MutationApplied {
		t.Fatalf("alice's mutation: %+v", ra)
	}

	// Mallory claims alice's client id, re-sending alice's mutation id with
	// other arguments.
	mallory.sendJSON(mutateFrame("alice-device", 1, `{"table":"accounts","row":{"org":"acme","id":"666","balance":"0"}}`))
	rm := mallory.waitFrame(10*time.Second, "mallory's reply", func(f schema.ServerFrame) bool {
		return f.Type == schema.FrameMutation && f.MutationID == 1
	})
	if rm.Status == schema.MutationApplied && rm.XID == ra.XID {
		t.Errorf("mallory received alice's recorded reply for (alice-device, 1): %+v", rm)
	}

	// Alice's next mutation must be confirmed to alice only.
	alice.sendJSON(mutateFrame("alice-device", 2, `{"table":"accounts","row":{"org":"acme","id":"2","balance":"22"}}`))
	alice.waitFrame(10*time.Second, "alice's reply 2", func(f schema.ServerFrame) bool {
		return f.Type == schema.FrameMutation && f.MutationID == 2
	})
	waitFor(t, 10*time.Second, "alice's confirmation of 2", func() bool { return slices.Contains(confirmed(alice), 2) })
	// Mallory's stream has passed the same commit once she holds row 2.
	waitFor(t, 10*time.Second, "mallory sees row 2", func() bool {
		return slices.ContainsFunc(mallory.viewOf("s"), func(r string) bool { return strings.Contains(r, `"id":"2"`) })
	})
	// Mallory's own mutation 1 (her own record under her subject) is hers
	// to see confirmed, once; alice's 2 never is.
	if got := confirmed(mallory); slices.Contains(got, 2) || len(got) > 1 {
		t.Errorf("mallory's commit frames confirm %v; want at most her own mutation 1", got)
	}
}
