package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// registerInput is a read or a write. Value is canonical JSON (see canonicalJSON).
type registerInput struct {
	Op    string
	Value string
}

// registerOutput is the answer; Value (canonical JSON) is set for an ok read.
type registerOutput struct {
	Status string
	Value  string
	// inFlight marks an operation without an answer (see dataModel).
	inFlight bool
}

// registerState is the register's value plus the writes in flight. It is
// comparable, so porcupine's default == serves as equality.
type registerState struct {
	// value is the canonical JSON of the current value ("null" when unset).
	value string
	// pending are the canonical JSON values of writes in flight, sorted,
	// each followed by "\n" (which canonical JSON never contains).
	pending string
}

// registerModel checks a single register holding any JSON value.
type registerModel struct {
	initial string
}

const registerPartition = "register"

func newRegisterModel(raw json.RawMessage) (*registerModel, error) {
	var initial struct {
		Value json.RawMessage `json:"value"`
	}
	if isAbsent(raw) {
		return nil, errors.New(`register needs "initial": {"value": <value or null>}`)
	}
	if err := json.Unmarshal(raw, &initial); err != nil {
		return nil, err
	}
	if initial.Value == nil {
		return nil, errors.New(`register needs "initial": {"value": <value or null>}`)
	}
	value, err := canonicalJSON(initial.Value)
	if err != nil {
		return nil, err
	}
	return &registerModel{initial: value}, nil
}

func (m *registerModel) decode(rawIn, rawOut json.RawMessage) (any, any, error) {
	var wireIn, wireOut struct {
		Op     string          `json:"op"`
		Status string          `json:"status"`
		Value  json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(rawIn, &wireIn); err != nil {
		return nil, nil, fmt.Errorf("input: %w", err)
	}
	if err := json.Unmarshal(rawOut, &wireOut); err != nil {
		return nil, nil, fmt.Errorf("output: %w", err)
	}
	in := &registerInput{Op: wireIn.Op}
	out := &registerOutput{Status: wireOut.Status}
	switch in.Op {
	case opWrite:
		if wireIn.Value == nil {
			return nil, nil, errors.New("write needs input.value")
		}
		value, err := canonicalJSON(wireIn.Value)
		if err != nil {
			return nil, nil, fmt.Errorf("input.value: %w", err)
		}
		in.Value = value
	case opRead:
		if out.Status == statusOK {
			if wireOut.Value == nil {
				return nil, nil, errors.New("an ok read needs output.value (null when unset)")
			}
			value, err := canonicalJSON(wireOut.Value)
			if err != nil {
				return nil, nil, fmt.Errorf("output.value: %w", err)
			}
			out.Value = value
		}
	default:
		return nil, nil, fmt.Errorf("input.op %q is not read or write", in.Op)
	}
	if out.Status != statusOK && out.Status != statusUnknown {
		return nil, nil, fmt.Errorf(`output.status must be "ok" or "unknown", got %q`, out.Status)
	}
	return in, out, nil
}

func (m *registerModel) partitionKey(any) string { return registerPartition }

func (m *registerModel) requires(input, output any) string {
	in, out := input.(*registerInput), output.(*registerOutput)
	if in.Op == opRead && out.Status == statusOK && out.Value != m.initial {
		return "value:" + out.Value
	}
	return ""
}

func (m *registerModel) provides(input, output any) string {
	if in := input.(*registerInput); in.Op == opWrite {
		return "value:" + in.Value
	}
	return ""
}

func (m *registerModel) inFlight(input, output any) (any, bool) {
	return &registerOutput{Status: statusUnknown, inFlight: true}, input.(*registerInput).Op == opWrite
}

func (m *registerModel) spec() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: partitionBy(m.partitionKey),
		Init:      func() []any { return []any{registerState{value: m.initial}} },
		Step: func(state, input, output any) []any {
			s := state.(registerState)
			in, out := input.(*registerInput), output.(*registerOutput)
			if out.inFlight {
				if in.Op == opWrite {
					return []any{s.withPending(in.Value)}
				}
				return []any{s}
			}
			var next []any
			for _, settled := range s.settle() {
				next = append(next, settled.step(in, out)...)
			}
			return next
		},
		Hash: func(state any) uint64 {
			s := state.(registerState)
			return hashString(s.value + "\x00" + s.pending)
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(*registerInput), output.(*registerOutput)
			result := out.Status
			switch {
			case out.inFlight:
				result = "no answer"
			case in.Op == opRead && out.Status == statusOK:
				result = out.Value
			}
			if in.Op == opWrite {
				return fmt.Sprintf("write(%s) → %s", in.Value, result)
			}
			return "read() → " + result
		},
		DescribeState: func(state any) string {
			s := state.(registerState)
			if s.pending == "" {
				return s.value
			}
			return fmt.Sprintf("%s in flight[%s]", s.value, strings.Join(s.writes(), ", "))
		},
		DescribeOperationMetadata: describeMetadata,
	}
	return nm.ToModel()
}

// step returns every state s can move to when in is answered with out; none
// when that answer is impossible from s.
func (s registerState) step(in *registerInput, out *registerOutput) []any {
	switch {
	case in.Op == opWrite && out.Status == statusOK:
		return []any{registerState{in.Value, s.pending}}
	case in.Op == opWrite: // unknown: the write happened or it did not
		return []any{s, registerState{in.Value, s.pending}}
	case out.Status == statusOK && out.Value != s.value:
		return nil
	default:
		return []any{s}
	}
}

// writes lists the values of the writes in flight.
func (s registerState) writes() []string {
	if s.pending == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s.pending, "\n"), "\n")
}

func (s registerState) withWrites(writes []string) registerState {
	if len(writes) == 0 {
		return registerState{value: s.value}
	}
	return registerState{value: s.value, pending: strings.Join(writes, "\n") + "\n"}
}

// withPending returns s with a write of value in flight.
func (s registerState) withPending(value string) registerState {
	writes := append(s.writes(), value)
	slices.Sort(writes)
	return s.withWrites(writes)
}

// settle returns every state s can reach by applying some of its writes in
// flight, each at most once, in some order (s itself included).
func (s registerState) settle() []registerState {
	reached := []registerState{s}
	seen := map[registerState]bool{s: true}
	for i := 0; i < len(reached); i++ {
		cur := reached[i]
		writes := cur.writes()
		for j, w := range writes {
			if j > 0 && w == writes[j-1] {
				continue // the same write again reaches the same states
			}
			next := cur.withWrites(slices.Delete(slices.Clone(writes), j, j+1))
			next.value = w
			if !seen[next] {
				seen[next] = true
				reached = append(reached, next)
			}
		}
	}
	return reached
}
