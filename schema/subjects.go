package schema

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// NATS subjects used by Ripple. Data subjects are built with DataSubject.
const (
	// SubjectPrefix starts every data subject: sync.<org>.<table>.
	SubjectPrefix = "sync"
	// SubjectControl carries heartbeats, checkpoints and table-wide resync
	// markers from the ingest to every gateway.
	SubjectControl = "ripple.ctl"
	// SubjectBarrier is the request subject a gateway uses to ask the active
	// ingest for a barrier on a data subject (BarrierRequest / BarrierReply).
	SubjectBarrier = "ripple.barrier"
	// SubjectPosition is the request subject that answers the ingest's
	// current decoded-through LSN (PositionReply).
	SubjectPosition = "ripple.position"
	// SubjectMutate is the request subject writers serve in queue group
	// WriterQueue (MutationRequest / MutationReply).
	SubjectMutate = "ripple.mutate"
	// WriterQueue is the NATS queue group shared by all writers.
	WriterQueue = "ripple-writers"
)

// MutationsTable is the registry name of Ripple's own mutation log. Its rows
// are published on DataSubject(org, MutationsTable) and a gateway forwards a
// record only to the client that wrote it.
const MutationsTable = "ripple.mutations"

// ErrBadSubject is returned by ParseDataSubject for anything that is not a
// Ripple data subject.
var ErrBadSubject = errors.New("schema: not a ripple data subject")

// EscapeToken turns any string into a safe NATS subject token. Strings made
// only of ASCII letters, digits, '_' and '-' are kept as they are; anything
// else (including the empty string) becomes "~" followed by the unpadded
// base64url encoding of its bytes. Since '~' never appears in a kept token the
// mapping is injective and UnescapeToken reverses it.
func EscapeToken(s string) string {
	if isPlainToken(s) {
		return s
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

// UnescapeToken reverses EscapeToken.
func UnescapeToken(tok string) (string, error) {
	if rest, ok := strings.CutPrefix(tok, "~"); ok {
		b, err := base64.RawURLEncoding.DecodeString(rest)
		if err != nil {
			return "", fmt.Errorf("%w: bad escaped token %q", ErrBadSubject, tok)
		}
		if isPlainToken(string(b)) || EscapeToken(string(b)) != tok {
			// Only the canonical form is accepted, so every subject
			// names exactly one string.
			return "", fmt.Errorf("%w: non-canonical escaped token %q", ErrBadSubject, tok)
		}
		return string(b), nil
	}
	if !isPlainToken(tok) {
		return "", fmt.Errorf("%w: bad token %q", ErrBadSubject, tok)
	}
	return tok, nil
}

func isPlainToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// DataSubject is the NATS subject of one (organisation, table) pair.
func DataSubject(org, table string) string {
	return SubjectPrefix + "." + EscapeToken(org) + "." + EscapeToken(table)
}

// ParseDataSubject returns the organisation and table of a data subject.
func ParseDataSubject(subject string) (org, table string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 3 || parts[0] != SubjectPrefix {
		return "", "", fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	if org, err = UnescapeToken(parts[1]); err != nil {
		return "", "", err
	}
	if table, err = UnescapeToken(parts[2]); err != nil {
		return "", "", err
	}
	return org, table, nil
}
