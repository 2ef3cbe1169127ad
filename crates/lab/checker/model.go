package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"

	"github.com/anishathalye/porcupine"
)

// dataModel is a sequential specification plus what the CLI needs around it:
// decoding operations, operations without an answer, and the links between
// operations that minimisation must not cut.
//
// Both models are porcupine.NondeterministicModels: an answer of "unknown"
// (a 503, a timeout) means the operation took effect or did not, and
// porcupine's deterministic Model cannot branch. Step returns every state the
// operation can lead to, and ToModel turns that into a deterministic model
// over *sets* of states (the power-set construction), merging equal states.
//
// An operation that never got an answer ("return": null), or that
// minimisation cuts while in flight, may take effect at any time after its
// call, or never. porcupine would keep such an operation open until the end
// of the history and, to prove a history illegal, try it at every later
// point: exponential in the number of them (a 3000-operation history with 50
// timeouts does not finish in minutes). So instead it becomes a point
// operation at its call whose output says "in flight" (see inFlight); its
// step puts its effect in the state's pending pool, and before every later
// step the model may apply any pending effects, each at most once, in any
// order ("settle"). That allows exactly the same histories, but the choices
// live in the state set, where equal states merge.
type dataModel interface {
	// spec is the porcupine model, including its partition function.
	spec() porcupine.Model
	// decode parses and validates one operation's input and output.
	decode(input, output json.RawMessage) (any, any, error)
	// partitionKey names the partition an input belongs to.
	partitionKey(input any) string
	// requires names what an operation's output refers to that another
	// operation produced ("" for nothing): a reservation id, a written value.
	requires(input, output any) string
	// provides names what an operation produces that others may refer to.
	provides(input, output any) string
	// inFlight is the output of the operation as an in-flight point
	// operation (see above). effectful is false for one that can change no
	// state (a read, an "insufficient", a "conflict"), which can simply be
	// left out instead.
	inFlight(input, output any) (out any, effectful bool)
}

// Output statuses.
const (
	statusOK           = "ok"
	statusUnknown      = "unknown"
	statusCreated      = "created"
	statusInsufficient = "insufficient"
	statusConfirmed    = "confirmed"
	statusCancelled    = "cancelled"
	statusConflict     = "conflict"
)

// Operation kinds (read is shared by both models).
const (
	opReserve = "reserve"
	opConfirm = "confirm"
	opCancel  = "cancel"
	opRead    = "read"
	opWrite   = "write"
)

// partitionBy builds a porcupine partition function from a key, keeping
// partitions in order of their first operation and operations in their order.
func partitionBy(key func(input any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(history []porcupine.Operation) [][]porcupine.Operation {
		index := map[string]int{}
		var parts [][]porcupine.Operation
		for _, op := range history {
			k := key(op.Input)
			i, seen := index[k]
			if !seen {
				i = len(parts)
				index[k] = i
				parts = append(parts, nil)
			}
			parts[i] = append(parts[i], op)
		}
		return parts
	}
}

// describeMetadata names an operation in the visualisation by its index in
// the input.
func describeMetadata(info any) string {
	if i, ok := info.(int); ok {
		return fmt.Sprintf("operations[%d]", i)
	}
	return ""
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}
