package schema

import "encoding/json"

// ProtocolVersion is the WebSocket protocol version a gateway speaks. Clients
// connect with the subprotocol "ripple.v1" (ProtocolName).
const (
	ProtocolVersion = 1
	ProtocolName    = "ripple.v1"
)

// Frame types sent by clients.
const (
	FrameAuth        = "auth"        // {token}: first frame, and any time later to refresh
	FrameSubscribe   = "subscribe"   // {id, table, org, columns?, cursor?, lsn?}
	FrameUnsubscribe = "unsubscribe" // {id}
	FramePing        = "ping"        // {id?}
	FrameMutate      = "mutate"      // {client_id, mutation_id, mutator, args}
)

// Frame types sent by gateways.
const (
	FrameAuthOK        = "auth_ok"        // {sub, exp}
	FrameSnapshotBegin = "snapshot_begin" // {id, mode: "full"|"resume", key}
	FrameSnapshot      = "snapshot"       // {id, ops}: one bounded batch
	FrameReady         = "ready"          // {id, lsn, cursor}: the subscription's first consistent state
	FramePart          = "part"           // {table, org, xid, seq, last, ops}: shared bytes for all clients
	FrameCommit        = "commit"         // {lsn, xid, time, confirmed?}: per-client, closes a transaction
	FrameCheckpoint    = "checkpoint"     // {id, lsn, cursor}
	FrameResync        = "resync"         // {id, reason}: the gateway is catching this subscription up again
	FrameUnsubscribed  = "unsubscribed"   // {id}
	FrameError         = "error"          // {id?, code, message}
	FramePong          = "pong"           // {id?}
	FrameMutation      = "mutation"       // {client_id, mutation_id, status, code?, message?, result?, xid?}
)

// Snapshot modes.
const (
	SnapshotFull   = "full"   // replace everything held for the subscription
	SnapshotResume = "resume" // apply on top of what the client holds
)

// Error codes in FrameError.
const (
	ErrCodeBadFrame      = "bad_frame"     // not JSON, unknown type, missing fields
	ErrCodeTooLarge      = "too_large"     // frame over the size limit
	ErrCodeUnauthorized  = "unauthorized"  // no or invalid token
	ErrCodeTokenExpired  = "token_expired" // token expired; send a fresh one
	ErrCodeForbidden     = "forbidden"     // organisation or table outside the token
	ErrCodeUnknownTable  = "unknown_table" // not a sync table
	ErrCodeBadColumns    = "bad_columns"   // unknown column in the column list
	ErrCodeDuplicateID   = "duplicate_id"  // subscription id already in use
	ErrCodeUnknownSub    = "unknown_subscription"
	ErrCodeReplicaLag    = "replica_lag" // replica did not catch up in time; retrying
	ErrCodeSlowClient    = "slow_client" // outbound queue overflowed
	ErrCodeUnavailable   = "unavailable" // ingest or database unreachable
	ErrCodeInternal      = "internal"
	ErrCodeBadCursor     = "bad_cursor"
	ErrCodeMutationOrder = "mutation_out_of_order"
)

// ClientFrame is every frame a client may send; Type says which fields apply.
type ClientFrame struct {
	Type       string          `json:"type"`
	ID         string          `json:"id,omitempty"`
	Token      string          `json:"token,omitempty"`
	Table      string          `json:"table,omitempty"`
	Org        string          `json:"org,omitempty"`
	Columns    []string        `json:"columns,omitempty"`
	Cursor     *XID8           `json:"cursor,omitempty"`
	LSN        *LSN            `json:"lsn,omitempty"`
	ClientID   string          `json:"client_id,omitempty"`
	MutationID int64           `json:"mutation_id,omitempty"`
	Mutator    string          `json:"mutator,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"`
}

// ServerFrame is every frame a gateway may send; Type says which fields apply.
// Clients decode into it; gateways may also build the shared FramePart bytes
// by hand for speed, as long as they decode to this shape.
type ServerFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Sub  string `json:"sub,omitempty"`
	Exp  int64  `json:"exp,omitempty"`
	Mode string `json:"mode,omitempty"`
	// Key lists the table's primary key column names in key order; set in
	// FrameSnapshotBegin so the client can identify rows.
	Key        []string        `json:"key,omitempty"`
	Table      string          `json:"table,omitempty"`
	Org        string          `json:"org,omitempty"`
	XID        XID8            `json:"xid,omitempty"`
	Seq        int             `json:"seq,omitempty"`
	Last       bool            `json:"last,omitempty"`
	LSN        LSN             `json:"lsn,omitempty"`
	Time       string          `json:"time,omitempty"`
	Cursor     *XID8           `json:"cursor,omitempty"`
	Ops        []Op            `json:"ops,omitempty"`
	Confirmed  []int64         `json:"confirmed,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Code       string          `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
	ClientID   string          `json:"client_id,omitempty"`
	MutationID int64           `json:"mutation_id,omitempty"`
	Status     string          `json:"status,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
}
