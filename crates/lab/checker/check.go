package main

import (
	"encoding/json"
	"math"
	"time"

	"github.com/anishathalye/porcupine"
)

// Options tune one check.
type Options struct {
	// Timeout bounds porcupine's search over the whole history, and each
	// later run while minimising; 0 means no limit.
	Timeout time.Duration
	// MinimizeTimeout bounds finding and shrinking the counterexample.
	MinimizeTimeout time.Duration
}

// Result values of a Verdict.
const (
	resultOK      = "ok"
	resultIllegal = "illegal"
	resultUnknown = "unknown"
)

// Verdict is what the CLI prints. Every key is always present.
type Verdict struct {
	Model      string `json:"model"`
	Operations int    `json:"operations"`
	Partitions int    `json:"partitions"`
	// Result is "ok", "illegal" or "unknown" (porcupine timed out).
	Result string `json:"result"`
	// Linearizable is null when Result is "unknown".
	Linearizable *bool `json:"linearizable"`
	// FailingPartitions are the keys (sku, or "register") of the partitions
	// shown not linearizable, in order of their first call.
	FailingPartitions []string `json:"failing_partitions"`
	// Counterexample is a shrunk sub-history of the first failing partition,
	// sorted by call time; empty unless Result is "illegal".
	Counterexample []CounterexampleOp `json:"counterexample"`
	// CounterexampleMinimal is false when shrinking ran out of time, so some
	// operation of Counterexample may be removable.
	CounterexampleMinimal bool `json:"counterexample_minimal"`
}

// CounterexampleOp is one operation of a counterexample, times in
// milliseconds since the first call of the whole history.
type CounterexampleOp struct {
	Client int     `json:"client"`
	CallMs float64 `json:"call_ms"`
	// ReturnMs is null when the outcome is unknown.
	ReturnMs *float64        `json:"return_ms"`
	Input    json.RawMessage `json:"input"`
	Output   json.RawMessage `json:"output"`
	// Culprit marks the one operation whose answer is impossible given the
	// others; with it in flight instead, the counterexample is linearizable.
	Culprit bool `json:"culprit"`
}

// Check runs porcupine over h and, when h is not linearizable, shrinks a
// counterexample. The LinearizationInfo is for Visualize.
func Check(h *History, opts Options) (Verdict, porcupine.LinearizationInfo) {
	model := h.model.spec()
	ops := h.porcupineOps()
	parts := model.Partition(ops)
	verdict := Verdict{
		Model:             h.ModelName,
		Operations:        len(ops),
		Partitions:        len(parts),
		FailingPartitions: []string{},
		Counterexample:    []CounterexampleOp{},
	}

	result, info := porcupine.CheckOperationsVerbose(model, ops, opts.Timeout)
	switch result {
	case porcupine.Ok:
		verdict.Result, verdict.Linearizable = resultOK, ptr(true)
		return verdict, info
	case porcupine.Unknown:
		verdict.Result = resultUnknown
		return verdict, info
	}
	verdict.Result, verdict.Linearizable = resultIllegal, ptr(false)

	// Find the failing partitions. One with a complete linearization in info
	// passed. Any other one failed, or was cut short when the timeout fired
	// after another had failed, so it is checked again on its own.
	budget := &checkBudget{deadline: time.Now().Add(opts.MinimizeTimeout), perCheck: opts.Timeout}
	passed := map[int]bool{}
	for i, partials := range info.PartialLinearizations() {
		for _, lin := range partials {
			if i < len(parts) && len(lin) == len(parts[i]) {
				passed[i] = true
			}
		}
	}
	var first []porcupine.Operation
	for i, part := range parts {
		if passed[i] || !budget.illegal(model, part) {
			continue
		}
		verdict.FailingPartitions = append(verdict.FailingPartitions, h.model.partitionKey(part[0].Input))
		if first == nil {
			first = part
		}
	}
	if first == nil {
		return verdict, info
	}

	kept, culprit, minimal := minimize(h.model, model, first, budget)
	sortByCall(kept)
	origin := h.origin()
	for _, op := range kept {
		o := h.Ops[op.Metadata.(int)]
		c := CounterexampleOp{
			Client:  o.Client,
			CallMs:  millis(o.Call - origin),
			Input:   o.RawInput,
			Output:  o.RawOutput,
			Culprit: op.Metadata == culprit.Metadata,
		}
		if op.Output != o.Output { // in flight: no return, or cut by minimize
			c.Output = json.RawMessage(`{"status":"unknown"}`)
		} else if o.ReturnKnown() {
			c.ReturnMs = ptr(millis(o.Return - origin))
		}
		verdict.Counterexample = append(verdict.Counterexample, c)
	}
	verdict.CounterexampleMinimal = minimal
	return verdict, info
}

// Visualize writes porcupine's HTML view of a check of h to path.
func Visualize(h *History, info porcupine.LinearizationInfo, path string) error {
	return porcupine.VisualizePath(h.model.spec(), info, path)
}

// millis turns nanoseconds into milliseconds rounded to the microsecond.
func millis(ns int64) float64 {
	return math.Round(float64(ns)/1e3) / 1e3
}

func ptr[T any](v T) *T { return &v }
