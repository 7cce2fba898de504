package schema

import (
	"encoding/json"
	"time"
)

// Kind tells what a message published by the ingest is. Every NATS message
// Ripple publishes is a JSON object whose "k" field holds its Kind, so a
// gateway can route it before decoding the rest.
type Kind string

// Message kinds published by the ingest.
const (
	KindPart      Kind = "part"    // a (chunk of a) transaction part on a data subject
	KindBarrier   Kind = "barrier" // a barrier on a data subject (rule 2)
	KindHeartbeat Kind = "hb"      // on SubjectControl, about once a second (rule 1)
	KindResync    Kind = "resync"  // on SubjectControl: resynchronise a table (truncate, schema change)
)

// Operation names carried in Op.Op.
const (
	OpInsert = "insert"
	OpUpdate = "update"
	OpDelete = "delete"
)

// Op is one row operation. Inserts and updates carry the whole row (every
// column except Ripple's own xid column, in table column order, encoded by the
// value codec); deletes carry the primary key columns only. Applying an op is
// idempotent: inserts and updates are full-row upserts, deletes remove by key.
type Op struct {
	Op  string          `json:"op"`
	Row json.RawMessage `json:"row,omitempty"`
	Key json.RawMessage `json:"key,omitempty"`
}

// Part is what the ingest publishes on DataSubject(Org, Table) for one
// transaction: the operations of that transaction on rows of one organisation
// and one table (rule 7). A part larger than the ingest's message cap is sent
// as several messages with Seq 0, 1, 2, ...; only the one with Last set carries
// LSN, CommitTime and Subjects. A Seq 0 chunk for an XID that a receiver
// already holds chunks of means the ingest restarted and repeats the
// transaction: the receiver drops what it held for that XID and starts again.
type Part struct {
	K     Kind   `json:"k"`
	Epoch string `json:"epoch"`
	XID   XID8   `json:"xid"`
	Org   string `json:"org"`
	Table string `json:"table"`
	Seq   int    `json:"seq"`
	Last  bool   `json:"last,omitempty"`
	// LSN is the commit's end LSN (rule 0); set only when Last.
	LSN LSN `json:"lsn,omitempty"`
	// CommitTime is the commit timestamp; set only when Last.
	CommitTime time.Time `json:"time,omitzero"`
	// Subjects lists, sorted, every data subject of this Org that the
	// transaction touched (this one included); set only when Last. It never
	// names another organisation's subjects.
	Subjects []string `json:"subjects,omitempty"`
	Ops      []Op     `json:"ops"`
}

// RawPart is Part with the operations left undecoded, for receivers (the
// gateway) that forward them without looking inside.
type RawPart struct {
	K          Kind            `json:"k"`
	Epoch      string          `json:"epoch"`
	XID        XID8            `json:"xid"`
	Org        string          `json:"org"`
	Table      string          `json:"table"`
	Seq        int             `json:"seq"`
	Last       bool            `json:"last,omitempty"`
	LSN        LSN             `json:"lsn,omitempty"`
	CommitTime time.Time       `json:"time,omitzero"`
	Subjects   []string        `json:"subjects,omitempty"`
	Ops        json.RawMessage `json:"ops"`
}

// Barrier is published on a data subject at a gateway's request. Everything
// the ingest published on that subject before it has LSN <= D, and everything
// after it arrives at a subscriber that received the barrier (rule 2).
type Barrier struct {
	K     Kind   `json:"k"`
	Epoch string `json:"epoch"`
	ID    string `json:"id"`
	D     LSN    `json:"d"`
}

// BarrierRequest is the body of a request on SubjectBarrier.
type BarrierRequest struct {
	Subject string `json:"subject"`
	// ID is echoed in the Barrier so the requester recognises its own.
	ID string `json:"id"`
}

// BarrierReply answers a BarrierRequest once the barrier has been published.
type BarrierReply struct {
	Epoch string `json:"epoch"`
	D     LSN    `json:"d"`
	Error string `json:"error,omitempty"`
}

// PositionReply answers a request on SubjectPosition: the decoded-through LSN.
type PositionReply struct {
	Epoch string `json:"epoch"`
	D     LSN    `json:"d"`
}

// Checkpoint is a resume cursor that became safe: a client that has applied
// every commit up to LSN has seen every transaction with an id below XMin,
// so it may resume with cursor XMin (rule 5).
type Checkpoint struct {
	LSN  LSN  `json:"lsn"`
	XMin XID8 `json:"xmin"`
}

// Heartbeat is published on SubjectControl about once a second. D is the
// decoded-through LSN: every commit with LSN <= D was published before this
// heartbeat (rule 1). Checkpoint, when set, has Checkpoint.LSN <= D.
type Heartbeat struct {
	K          Kind        `json:"k"`
	Epoch      string      `json:"epoch"`
	D          LSN         `json:"d"`
	Time       time.Time   `json:"time"`
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// Resync tells gateways that the stream of a table can no longer be applied
// incrementally from LSN on (TRUNCATE, a column change): every subscription of
// Table (of Org, or of every organisation when Org is empty) must catch up
// again. It is published on SubjectControl in order with the data.
type Resync struct {
	K      Kind   `json:"k"`
	Epoch  string `json:"epoch"`
	Table  string `json:"table"`
	Org    string `json:"org,omitempty"`
	LSN    LSN    `json:"lsn"`
	Reason string `json:"reason"`
}

// Envelope decodes just the kind of a message.
type Envelope struct {
	K Kind `json:"k"`
}

// Claims are what a verified token grants. Gateways verify tokens and forward
// the claims to writers with each mutation.
type Claims struct {
	Subject   string    `json:"sub"`
	Orgs      []string  `json:"orgs"`
	WriteOrgs []string  `json:"write_orgs,omitempty"`
	Tables    []string  `json:"tables,omitempty"`
	Expires   time.Time `json:"exp"`
}

// CanRead reports whether the claims allow reading table of org.
func (c Claims) CanRead(org, table string) bool {
	return contains(c.Orgs, org) && (len(c.Tables) == 0 || contains(c.Tables, table))
}

// CanWrite reports whether the claims allow writing table of org.
func (c Claims) CanWrite(org, table string) bool {
	return contains(c.WriteOrgs, org) && (len(c.Tables) == 0 || contains(c.Tables, table))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// MutationRequest is sent by a gateway to the writers on SubjectMutate.
type MutationRequest struct {
	ClientID   string          `json:"client_id"`
	MutationID int64           `json:"mutation_id"`
	Mutator    string          `json:"mutator"`
	Args       json.RawMessage `json:"args"`
	Claims     Claims          `json:"claims"`
}

// Mutation statuses.
const (
	MutationApplied  = "applied"
	MutationRejected = "rejected"
)

// MutationReply is a writer's answer. A retry of an already recorded mutation
// gets the original reply again.
type MutationReply struct {
	ClientID   string          `json:"client_id"`
	MutationID int64           `json:"mutation_id"`
	Status     string          `json:"status"`
	Code       string          `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	// XID is the id of the transaction that recorded the mutation; its
	// commit reaches the client through the stream (writes section of BRIEF).
	XID XID8 `json:"xid,omitempty"`
}
