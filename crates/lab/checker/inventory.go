package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// inventoryInput is a request against one sku.
type inventoryInput struct {
	Op          string `json:"op"`
	SKU         string `json:"sku"`
	Quantity    int64  `json:"quantity"`
	Reservation string `json:"reservation"`
}

// inventoryOutput is what the service answered.
type inventoryOutput struct {
	Status      string `json:"status"`
	Reservation string `json:"reservation"`
	Available   *int64 `json:"available"`
	// inFlight marks an operation without an answer (see dataModel).
	inFlight bool
}

type holdStatus uint8

const (
	held holdStatus = iota + 1
	confirmed
	cancelled
)

func (s holdStatus) String() string {
	switch s {
	case held:
		return "held"
	case confirmed:
		return "confirmed"
	default:
		return "cancelled"
	}
}

type hold struct {
	quantity int64
	status   holdStatus
}

// pendingEffect is the effect of an operation in flight, not applied yet.
type pendingEffect struct {
	// op is opReserve, opConfirm or opCancel.
	op string
	// quantity is set for a reserve.
	quantity int64
	// reservation is set for a confirm or cancel.
	reservation string
}

func (p pendingEffect) String() string {
	if p.op == opReserve {
		return fmt.Sprintf("reserve %d", p.quantity)
	}
	return p.op + " " + p.reservation
}

// skuState is one sku as the service should see it. A state is never
// changed once built (porcupine requires pure steps): each step that changes
// something builds a new one.
type skuState struct {
	// available is the units that can still be reserved.
	available int64
	// holds are the reservations whose id some client has seen.
	holds map[string]hold
	// holdsHash is the XOR of holdHash over holds, kept up to date by with.
	holdsHash uint64
	// pending are the effects of operations in flight, sorted.
	pending []pendingEffect
}

// inventoryModel checks reservations of stock, one partition per sku.
//
// A reserve that took effect without its client learning the id (answer
// "unknown") takes its units into a hold that is not in holds: nobody can
// confirm or cancel it, so the units are gone for this history. Hold expiry
// is not modelled: the lab must use TTLs longer than a run. States that
// differ only in which unknown reserves took effect collapse into one per
// available count, so state sets stay small.
//
// porcupine's Init cannot know which partition it starts, so the initial
// state is the nil *skuState and the first step of a partition replaces it
// with that sku's initial stock.
type inventoryModel struct {
	initial map[string]int64
}

func newInventoryModel(raw json.RawMessage) (*inventoryModel, error) {
	var initial map[string]int64
	if isAbsent(raw) {
		return nil, errors.New(`inventory needs "initial": {"<sku>": <available units>, ...}`)
	}
	if err := json.Unmarshal(raw, &initial); err != nil {
		return nil, err
	}
	for sku, units := range initial {
		if units < 0 {
			return nil, fmt.Errorf("sku %q starts with %d units", sku, units)
		}
	}
	return &inventoryModel{initial: initial}, nil
}

func (m *inventoryModel) decode(rawIn, rawOut json.RawMessage) (any, any, error) {
	var in inventoryInput
	if err := json.Unmarshal(rawIn, &in); err != nil {
		return nil, nil, fmt.Errorf("input: %w", err)
	}
	var out inventoryOutput
	if err := json.Unmarshal(rawOut, &out); err != nil {
		return nil, nil, fmt.Errorf("output: %w", err)
	}
	if _, ok := m.initial[in.SKU]; !ok {
		return nil, nil, fmt.Errorf("input.sku %q is not in initial", in.SKU)
	}
	var statuses []string
	switch in.Op {
	case opReserve:
		if in.Quantity < 1 {
			return nil, nil, errors.New("reserve needs a quantity of at least 1")
		}
		if out.Status == statusCreated && out.Reservation == "" {
			return nil, nil, errors.New(`a created reserve needs output.reservation`)
		}
		statuses = []string{statusCreated, statusInsufficient, statusUnknown}
	case opConfirm, opCancel:
		if in.Reservation == "" {
			return nil, nil, fmt.Errorf("%s needs input.reservation", in.Op)
		}
		done := statusConfirmed
		if in.Op == opCancel {
			done = statusCancelled
		}
		statuses = []string{done, statusConflict, statusUnknown}
	case opRead:
		if out.Status == statusOK && out.Available == nil {
			return nil, nil, errors.New(`an ok read needs output.available`)
		}
		statuses = []string{statusOK, statusUnknown}
	default:
		return nil, nil, fmt.Errorf("input.op %q is not reserve, confirm, cancel or read", in.Op)
	}
	if !slices.Contains(statuses, out.Status) {
		return nil, nil, fmt.Errorf("output.status of %s must be one of %v, got %q", in.Op, statuses, out.Status)
	}
	return &in, &out, nil
}

func (m *inventoryModel) partitionKey(input any) string { return input.(*inventoryInput).SKU }

func (m *inventoryModel) requires(input, output any) string {
	if in := input.(*inventoryInput); in.Op == opConfirm || in.Op == opCancel {
		return "reservation:" + in.Reservation
	}
	return ""
}

func (m *inventoryModel) provides(input, output any) string {
	in, out := input.(*inventoryInput), output.(*inventoryOutput)
	if in.Op == opReserve && out.Status == statusCreated {
		return "reservation:" + out.Reservation
	}
	return ""
}

func (m *inventoryModel) inFlight(input, output any) (any, bool) {
	in, out := input.(*inventoryInput), output.(*inventoryOutput)
	effectful := in.Op != opRead && out.Status != statusInsufficient && out.Status != statusConflict
	return &inventoryOutput{Status: statusUnknown, inFlight: true}, effectful
}

func (m *inventoryModel) spec() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: partitionBy(m.partitionKey),
		Init:      func() []any { return []any{(*skuState)(nil)} },
		Step: func(state, input, output any) []any {
			in, out := input.(*inventoryInput), output.(*inventoryOutput)
			s := state.(*skuState)
			if s == nil {
				s = &skuState{available: m.initial[in.SKU]}
			}
			if out.inFlight {
				return []any{s.withPending(in)}
			}
			var next []any
			for _, settled := range s.settle() {
				next = append(next, settled.step(in, out)...)
			}
			return next
		},
		Equal: func(a, b any) bool { return a.(*skuState).equal(b.(*skuState)) },
		Hash:  func(state any) uint64 { return state.(*skuState).hash() },
		DescribeOperation: func(input, output any) string {
			in, out := input.(*inventoryInput), output.(*inventoryOutput)
			result := out.Status
			switch {
			case out.inFlight:
				result = "no answer"
			case out.Status == statusCreated:
				result = "created " + out.Reservation
			case in.Op == opRead && out.Status == statusOK:
				result = fmt.Sprint(*out.Available)
			}
			switch in.Op {
			case opReserve:
				return fmt.Sprintf("reserve(%s, %d) → %s", in.SKU, in.Quantity, result)
			case opRead:
				return fmt.Sprintf("read(%s) → %s", in.SKU, result)
			default:
				return fmt.Sprintf("%s(%s) → %s", in.Op, in.Reservation, result)
			}
		},
		DescribeState: func(state any) string {
			s := state.(*skuState)
			if s == nil {
				return "initial"
			}
			return s.String()
		},
		DescribeOperationMetadata: describeMetadata,
	}
	return nm.ToModel()
}

// step returns every state s can move to when in is answered with out; none
// when that answer is impossible from s.
func (s *skuState) step(in *inventoryInput, out *inventoryOutput) []any {
	switch in.Op {
	case opReserve:
		fits := s.available >= in.Quantity
		switch out.Status {
		case statusCreated:
			if _, dup := s.holds[out.Reservation]; !fits || dup {
				return nil
			}
			return []any{s.with(out.Reservation, hold{in.Quantity, held}, -in.Quantity)}
		case statusInsufficient:
			if fits {
				return nil
			}
			return []any{s}
		default: // unknown: not taken, or taken by a hold whose id nobody saw
			if taken := s.apply(pendingEffect{op: opReserve, quantity: in.Quantity}); taken != nil {
				return []any{s, taken}
			}
			return []any{s}
		}
	case opConfirm:
		h, known := s.holds[in.Reservation]
		switch out.Status {
		case statusConfirmed:
			if !known || h.status == cancelled {
				return nil
			}
			return []any{s.with(in.Reservation, hold{h.quantity, confirmed}, 0)}
		case statusConflict:
			if !known || h.status != cancelled {
				return nil
			}
			return []any{s}
		default:
			if done := s.apply(pendingEffect{op: opConfirm, reservation: in.Reservation}); done != nil {
				return []any{s, done}
			}
			return []any{s}
		}
	case opCancel:
		h, known := s.holds[in.Reservation]
		switch out.Status {
		case statusCancelled:
			if !known || h.status == confirmed {
				return nil
			}
			if h.status == cancelled {
				return []any{s}
			}
			return []any{s.with(in.Reservation, hold{h.quantity, cancelled}, h.quantity)}
		case statusConflict:
			if !known || h.status != confirmed {
				return nil
			}
			return []any{s}
		default:
			if done := s.apply(pendingEffect{op: opCancel, reservation: in.Reservation}); done != nil {
				return []any{s, done}
			}
			return []any{s}
		}
	default: // read
		if out.Status == statusOK && *out.Available != s.available {
			return nil
		}
		return []any{s}
	}
}

// apply returns s after the effect of an operation that had one, or nil when
// it would change nothing: a reserve that does not fit, a confirm or cancel
// of a hold that is not held.
func (s *skuState) apply(p pendingEffect) *skuState {
	switch p.op {
	case opReserve:
		if s.available < p.quantity {
			return nil
		}
		taken := *s
		taken.available -= p.quantity
		return &taken
	default:
		h, known := s.holds[p.reservation]
		if !known || h.status != held {
			return nil
		}
		if p.op == opConfirm {
			return s.with(p.reservation, hold{h.quantity, confirmed}, 0)
		}
		return s.with(p.reservation, hold{h.quantity, cancelled}, h.quantity)
	}
}

// withPending returns s with the effect of in, now in flight, pending.
func (s *skuState) withPending(in *inventoryInput) *skuState {
	p := pendingEffect{op: in.Op}
	switch in.Op {
	case opRead:
		return s
	case opReserve:
		p.quantity = in.Quantity
	default:
		p.reservation = in.Reservation
	}
	next := *s
	i := sort.Search(len(s.pending), func(i int) bool { return !pendingLess(s.pending[i], p) })
	next.pending = slices.Insert(slices.Clone(s.pending), i, p)
	return &next
}

// settle returns every state s can reach by applying some of its pending
// effects, each at most once, in some order (s itself included).
func (s *skuState) settle() []*skuState {
	reached := []*skuState{s}
	if len(s.pending) == 0 {
		return reached
	}
	seen := map[uint64][]*skuState{s.hash(): {s}}
	for i := 0; i < len(reached); i++ {
		cur := reached[i]
		for j, p := range cur.pending {
			if j > 0 && p == cur.pending[j-1] {
				continue // the same effect again reaches the same states
			}
			next := cur.apply(p)
			if next == nil {
				continue // may apply later, when it fits
			}
			next.pending = slices.Delete(slices.Clone(cur.pending), j, j+1)
			h := next.hash()
			if slices.ContainsFunc(seen[h], next.equal) {
				continue
			}
			seen[h] = append(seen[h], next)
			reached = append(reached, next)
		}
	}
	return reached
}

func pendingLess(a, b pendingEffect) bool {
	if a.op != b.op {
		return a.op < b.op
	}
	if a.quantity != b.quantity {
		return a.quantity < b.quantity
	}
	return a.reservation < b.reservation
}

// with returns a copy of s with hold id set to h and available moved by delta.
func (s *skuState) with(id string, h hold, delta int64) *skuState {
	holds := make(map[string]hold, len(s.holds)+1)
	for k, v := range s.holds {
		holds[k] = v
	}
	sum := s.holdsHash
	if old, ok := s.holds[id]; ok {
		sum ^= holdHash(id, old)
	}
	holds[id] = h
	return &skuState{
		available: s.available + delta,
		holds:     holds,
		holdsHash: sum ^ holdHash(id, h),
		pending:   s.pending,
	}
}

func (s *skuState) equal(o *skuState) bool {
	if s == o {
		return true
	}
	if s == nil || o == nil || s.available != o.available || s.holdsHash != o.holdsHash ||
		len(s.holds) != len(o.holds) || !slices.Equal(s.pending, o.pending) {
		return false
	}
	for id, h := range s.holds {
		if oh, ok := o.holds[id]; !ok || oh != h {
			return false
		}
	}
	return true
}

// hash is consistent with equal.
func (s *skuState) hash() uint64 {
	if s == nil {
		return 0
	}
	h := (uint64(s.available)*0x9E3779B97F4A7C15 + 1) ^ s.holdsHash
	for _, p := range s.pending {
		h = h*31 + hashString(p.String())
	}
	return h
}

func holdHash(id string, h hold) uint64 {
	return hashString(fmt.Sprintf("%s\x00%d\x00%d", id, h.quantity, h.status))
}

func (s *skuState) String() string {
	ids := make([]string, 0, len(s.holds))
	for id := range s.holds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s:%d %s", id, s.holds[id].quantity, s.holds[id].status)
	}
	out := fmt.Sprintf("available=%d holds[%s]", s.available, strings.Join(parts, ", "))
	if len(s.pending) > 0 {
		pending := make([]string, len(s.pending))
		for i, p := range s.pending {
			pending[i] = p.String()
		}
		out += fmt.Sprintf(" in flight[%s]", strings.Join(pending, ", "))
	}
	return out
}
