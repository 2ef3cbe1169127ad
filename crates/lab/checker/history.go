package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Op is one operation of a history, decoded and validated.
type Op struct {
	// Client is the id of the client that issued the operation.
	Client int
	// Call is when the request was sent, in nanoseconds from the history's origin.
	Call int64
	// Return is when the response arrived, or math.MaxInt64 when none did
	// and the operation may take effect at any time after its call.
	Return int64
	// Input and Output are the model's typed view of the operation.
	Input, Output any
	// RawInput and RawOutput are the operation as given, echoed in counterexamples.
	RawInput, RawOutput json.RawMessage
}

// ReturnKnown says whether the operation has a response time.
func (o Op) ReturnKnown() bool { return o.Return != math.MaxInt64 }

// History is a whole input document, ready to check.
type History struct {
	// ModelName is "inventory" or "register".
	ModelName string
	model     dataModel
	// Ops are in input order; porcupine operations carry their index here as Metadata.
	Ops []Op
}

// wireHistory is the input document as it arrives on stdin.
type wireHistory struct {
	Model      string          `json:"model"`
	Initial    json.RawMessage `json:"initial"`
	Operations []wireOperation `json:"operations"`
}

// wireOperation is one operation as it arrives. Call and Return are raw so a
// missing field can be told apart from null.
type wireOperation struct {
	Client int             `json:"client"`
	Call   json.RawMessage `json:"call"`
	Return json.RawMessage `json:"return"`
	Input  json.RawMessage `json:"input"`
	Output json.RawMessage `json:"output"`
}

// ParseHistory reads exactly one history document from r. Every error it
// returns is a problem with the input.
func ParseHistory(r io.Reader) (*History, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var wire wireHistory
	if err := dec.Decode(&wire); err != nil {
		return nil, fmt.Errorf("decoding history: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the history document")
	}

	var model dataModel
	var err error
	switch wire.Model {
	case "inventory":
		model, err = newInventoryModel(wire.Initial)
	case "register":
		model, err = newRegisterModel(wire.Initial)
	default:
		return nil, fmt.Errorf(`"model" must be "inventory" or "register", got %q`, wire.Model)
	}
	if err != nil {
		return nil, fmt.Errorf("initial: %w", err)
	}

	h := &History{ModelName: wire.Model, model: model, Ops: make([]Op, 0, len(wire.Operations))}
	for i, w := range wire.Operations {
		op, err := decodeOperation(model, w)
		if err != nil {
			return nil, fmt.Errorf("operations[%d]: %w", i, err)
		}
		h.Ops = append(h.Ops, op)
	}
	return h, nil
}

func decodeOperation(model dataModel, w wireOperation) (Op, error) {
	if isAbsent(w.Call) {
		return Op{}, errors.New(`"call" is required`)
	}
	var call int64
	if err := json.Unmarshal(w.Call, &call); err != nil {
		return Op{}, fmt.Errorf(`"call": %w`, err)
	}
	if w.Return == nil {
		return Op{}, errors.New(`"return" is required (null when the outcome is unknown)`)
	}
	ret := int64(math.MaxInt64)
	if !isAbsent(w.Return) {
		if err := json.Unmarshal(w.Return, &ret); err != nil {
			return Op{}, fmt.Errorf(`"return": %w`, err)
		}
		if ret < call {
			return Op{}, fmt.Errorf(`"return" (%d) is before "call" (%d)`, ret, call)
		}
		if ret == math.MaxInt64 {
			return Op{}, errors.New(`"return" is out of range`)
		}
	}
	if isAbsent(w.Input) || isAbsent(w.Output) {
		return Op{}, errors.New(`"input" and "output" are required`)
	}
	input, output, err := model.decode(w.Input, w.Output)
	if err != nil {
		return Op{}, err
	}
	if ret == math.MaxInt64 {
		var answer struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(w.Output, &answer); err != nil || answer.Status != statusUnknown {
			return Op{}, errors.New(`an operation with "return": null needs output {"status":"unknown"}`)
		}
	}
	return Op{
		Client:    w.Client,
		Call:      call,
		Return:    ret,
		Input:     input,
		Output:    output,
		RawInput:  w.Input,
		RawOutput: w.Output,
	}, nil
}

// isAbsent is true for a field that was missing or null.
func isAbsent(raw json.RawMessage) bool {
	return raw == nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// porcupineOps converts the history for porcupine, sorted by call time (ties
// in input order), with each operation's index in h.Ops as its Metadata.
// Operations without a return become in-flight point operations (see
// dataModel).
func (h *History) porcupineOps() []porcupine.Operation {
	ops := make([]porcupine.Operation, len(h.Ops))
	for i, o := range h.Ops {
		ops[i] = porcupine.Operation{
			ClientId: o.Client,
			Input:    o.Input,
			Call:     o.Call,
			Output:   o.Output,
			Return:   o.Return,
			Metadata: i,
		}
		if !o.ReturnKnown() {
			ops[i].Output, _ = h.model.inFlight(o.Input, o.Output)
			ops[i].Return = o.Call
		}
	}
	sortByCall(ops)
	return ops
}

func sortByCall(ops []porcupine.Operation) {
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
}

// origin is the first call of the whole history; counterexample times are relative to it.
func (h *History) origin() int64 {
	if len(h.Ops) == 0 {
		return 0
	}
	first := h.Ops[0].Call
	for _, o := range h.Ops[1:] {
		first = min(first, o.Call)
	}
	return first
}

// canonicalJSON renders a JSON value in one fixed spelling (compact, object
// keys sorted, numbers as written) so register values compare by content.
func canonicalJSON(raw json.RawMessage) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(out), nil
}
