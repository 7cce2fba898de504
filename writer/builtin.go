package writer

import (
	"context"
	"encoding/json"

	"github.com/ripple-sync/ripple/schema"
)

// Names of the built-in mutators.
const (
	MutatorInsert = "insert"
	MutatorUpdate = "update"
	MutatorDelete = "delete"
)

// builtinArgs are the arguments of the built-in mutators:
//
//	insert {"table": "todos", "row": {"id": "1", "org": "acme", "title": "milk"}}
//	update {"table": "todos", "key": {"id": "1"}, "set": {"title": "oat milk"}}
//	delete {"table": "todos", "key": {"id": "1"}}
type builtinArgs struct {
	Table string          `json:"table"`
	Row   json.RawMessage `json:"row"`
	Key   json.RawMessage `json:"key"`
	Set   json.RawMessage `json:"set"`
}

func parseBuiltin(args json.RawMessage, need ...string) (builtinArgs, map[string]map[string]json.RawMessage, error) {
	var a builtinArgs
	fields, _, err := decodeObject(args, "args")
	if err != nil {
		return a, nil, Reject(CodeInvalidArgument, "%v", err)
	}
	allowed := map[string]bool{"table": true}
	for _, n := range need {
		allowed[n] = true
	}
	for k := range fields {
		if !allowed[k] {
			return a, nil, Reject(CodeInvalidArgument, "args: unexpected field %q", k)
		}
	}
	if t, ok := fields["table"]; ok {
		if err := json.Unmarshal(t, &a.Table); err != nil {
			return a, nil, Reject(CodeInvalidArgument, "args.table: %v", err)
		}
	}
	a.Row, a.Key, a.Set = fields["row"], fields["key"], fields["set"]
	if a.Table == "" {
		return a, nil, Reject(CodeInvalidArgument, "args: table is missing")
	}
	objs := map[string]map[string]json.RawMessage{}
	for _, n := range need {
		m, _, err := decodeObject(fields[n], "args."+n)
		if err != nil {
			return a, nil, Reject(CodeInvalidArgument, "%v", err)
		}
		objs[n] = m
	}
	return a, objs, nil
}

// preparer prepares a built-in write from its args.
type preparer func(ctx context.Context, tx *Tx, args json.RawMessage) (*prepared, error)

// builtinPreparer returns the built-in mutator of that name as a preparer,
// or nil.
func builtinPreparer(name string) preparer {
	switch name {
	case MutatorInsert:
		return prepInsertArgs
	case MutatorUpdate:
		return prepUpdateArgs
	case MutatorDelete:
		return prepDeleteArgs
	}
	return nil
}

func prepInsertArgs(ctx context.Context, tx *Tx, args json.RawMessage) (*prepared, error) {
	a, o, err := parseBuiltin(args, "row")
	if err != nil {
		return nil, err
	}
	return tx.prepInsert(ctx, a.Table, o["row"])
}

func prepUpdateArgs(ctx context.Context, tx *Tx, args json.RawMessage) (*prepared, error) {
	a, o, err := parseBuiltin(args, "key", "set")
	if err != nil {
		return nil, err
	}
	return tx.prepUpdate(ctx, a.Table, o["key"], o["set"])
}

func prepDeleteArgs(ctx context.Context, tx *Tx, args json.RawMessage) (*prepared, error) {
	a, o, err := parseBuiltin(args, "key")
	if err != nil {
		return nil, err
	}
	return tx.prepDelete(ctx, a.Table, o["key"])
}

// builtinMutator turns a preparer into a Mutator that prepares and runs the
// write in one go.
func builtinMutator(prep preparer) Mutator {
	return func(ctx context.Context, tx *Tx, _ schema.Claims, args json.RawMessage) (any, error) {
		p, err := prep(ctx, tx, args)
		return tx.run(ctx, p, err)
	}
}
