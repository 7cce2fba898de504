package writer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ripple-sync/ripple/schema"
)

// Rejection codes produced by the writer itself. They are the
// schema.MutationCode* constants, repeated here for convenience.
const (
	CodeUnknownMutator  = schema.MutationCodeUnknownMutator
	CodeUnknownTable    = schema.MutationCodeUnknownTable
	CodeForbidden       = schema.MutationCodeForbidden
	CodeInvalidArgument = schema.MutationCodeInvalidArgument
	CodeConstraint      = schema.MutationCodeConstraint
	CodeNotFound        = schema.MutationCodeNotFound
	CodeInternal        = schema.MutationCodeInternal
	CodeOutOfOrder      = schema.MutationCodeOutOfOrder
	CodeExpired         = schema.MutationCodeExpired
	CodeUnavailable     = schema.MutationCodeUnavailable
)

// Sentinel errors returned by New, Register and Run.
var (
	// ErrBadConfig is returned by New for an invalid Config.
	ErrBadConfig = errors.New("writer: bad config")
	// ErrDuplicateMutator is returned by Register for a name already taken
	// (the built-in names insert, update and delete included).
	ErrDuplicateMutator = errors.New("writer: mutator already registered")
	// ErrRunning is returned by Register after Run started and by a second
	// call of Run.
	ErrRunning = errors.New("writer: already running")
)

// Rejection is a business-rule failure: the mutation is rejected with Code
// and Message (both shown to the client), everything it wrote is rolled back,
// and the rejection is recorded so a retry gets the same answer. Custom
// mutators return a *Rejection (for example Code "insufficient_funds").
type Rejection struct {
	Code    string
	Message string
}

// Error implements error.
func (r *Rejection) Error() string {
	if r.Message == "" {
		return r.Code
	}
	return r.Code + ": " + r.Message
}

// Reject returns a *Rejection with a formatted message.
func Reject(code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Message: fmt.Sprintf(format, args...)}
}

// errRetry marks an error that should make the whole transaction run again
// (serialization failure, deadlock, stale table metadata).
type errRetry struct{ err error }

func (e *errRetry) Error() string { return "retryable: " + e.err.Error() }
func (e *errRetry) Unwrap() error { return e.err }

// classify turns an error out of a mutator into what happens next:
//   - a *Rejection to record (final),
//   - a retry of the whole transaction (retry == true),
//   - or a transient failure (rejection == nil, retry == false): nothing is
//     recorded and the client is told the writer is unavailable.
func classify(err error) (rej *Rejection, retry bool) {
	var r *Rejection
	if errors.As(err, &r) {
		return r, false
	}
	var rt *errRetry
	if errors.As(err, &rt) {
		return nil, true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyPg(pgErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, false
	}
	var netErr net.Error
	if errors.As(err, &netErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return nil, false
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return nil, false
	}
	return &Rejection{Code: CodeInternal, Message: err.Error()}, false
}

// classifyPg maps a Postgres error to a rejection or a retry. Class 40
// (serialization failure, deadlock) retries; classes 08, 53, 57 and 58
// (connection, resources, operator intervention such as statement_timeout,
// system) are transient and not recorded.
func classifyPg(e *pgconn.PgError) (*Rejection, bool) {
	class := e.Code
	if len(class) > 2 {
		class = class[:2]
	}
	switch class {
	case "40":
		return nil, true
	case "0A":
		if strings.Contains(e.Message, "cached plan must not change result type") {
			// A table changed under a prepared statement; the statement
			// cache drops it and the transaction runs again.
			return nil, true
		}
	case "08", "53", "57", "58", "XX":
		return nil, false
	case "23":
		name := e.ConstraintName
		msg := e.Message
		if name != "" {
			msg = fmt.Sprintf("constraint %q: %s", name, e.Message)
		}
		if e.Detail != "" {
			msg += " (" + e.Detail + ")"
		}
		return &Rejection{Code: CodeConstraint, Message: msg}, false
	case "22":
		return &Rejection{Code: CodeInvalidArgument, Message: e.Message}, false
	}
	switch e.Code {
	case "42703", // undefined_column
		"42804", // datatype_mismatch
		"428C9", // generated_always
		"42846": // cannot_coerce
		return &Rejection{Code: CodeInvalidArgument, Message: e.Message}, false
	}
	return &Rejection{Code: CodeInternal, Message: e.Message}, false
}
