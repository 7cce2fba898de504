package schema

// Rejection codes a writer puts in MutationReply.Code (and in FrameMutation)
// for a rejected mutation. Custom mutators may use codes of their own (for
// example "insufficient_funds"); these are the ones Ripple itself produces.
//
// Two codes are not final: ErrCodeMutationOrder (the mutation id skips ahead;
// the reply's message and result name the expected id) and ErrCodeUnavailable
// (the database could not be reached or the transaction kept failing). Neither
// is recorded, nothing was written, and the client keeps its optimistic state
// and sends the mutation again later. MutationCodeExpired answers a retry of a
// mutation the writer processed so long ago that its record was pruned: it
// is final (the mutation is never applied again; synced data shows its
// effect, if it had one) but says nothing of the original outcome. Every
// other rejection is recorded: a retry gets the same reply, and the client
// rolls the mutation back.
const (
	MutationCodeUnknownMutator  = "unknown_mutator"      // no mutator of that name
	MutationCodeUnknownTable    = "unknown_table"        // not a sync table
	MutationCodeForbidden       = "forbidden"            // organisation or table outside the token's write claims
	MutationCodeInvalidArgument = "invalid_argument"     // malformed arguments, unknown column, value of the wrong type
	MutationCodeConstraint      = "constraint_violation" // a constraint failed; the message names it
	MutationCodeNotFound        = "not_found"            // update/delete of a row that does not exist
	MutationCodeInternal        = "internal"             // the mutator failed for another reason
	MutationCodeOutOfOrder      = ErrCodeMutationOrder   // not final, not recorded
	MutationCodeExpired         = "mutation_expired"     // processed long ago, its record pruned: outcome unknown
	MutationCodeUnavailable     = ErrCodeUnavailable     // not final, not recorded
)

// MutationCodeFinal reports whether a rejection with this code is final
// (recorded; roll the mutation back) rather than a request to send the
// mutation again later.
func MutationCodeFinal(code string) bool {
	return code != MutationCodeOutOfOrder && code != MutationCodeUnavailable
}

// OutOfOrderResult is the Result of a mutation_out_of_order rejection.
type OutOfOrderResult struct {
	// Expected is the mutation id the writer will accept next from this
	// client.
	Expected int64 `json:"expected_mutation_id"`
}
