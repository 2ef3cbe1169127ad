package main

import (
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// checkBudget bounds the porcupine runs made after the main check.
type checkBudget struct {
	// deadline is when all further checks must have finished.
	deadline time.Time
	// perCheck bounds one run (0 = only the deadline).
	perCheck time.Duration
	// inconclusive is set once a run timed out or the deadline passed, so a
	// result built from these runs may not be as small as it could be.
	inconclusive bool
}

// run checks ops within the budget; Unknown when it ran out.
func (b *checkBudget) run(model porcupine.Model, ops []porcupine.Operation) porcupine.CheckResult {
	left := time.Until(b.deadline)
	if left <= 0 {
		b.inconclusive = true
		return porcupine.Unknown
	}
	if b.perCheck > 0 {
		left = min(left, b.perCheck)
	}
	result := porcupine.CheckOperationsTimeout(model, ops, left)
	if result == porcupine.Unknown {
		b.inconclusive = true
	}
	return result
}

func (b *checkBudget) illegal(model porcupine.Model, ops []porcupine.Operation) bool {
	return b.run(model, ops) == porcupine.Illegal
}

func (b *checkBudget) legal(model porcupine.Model, ops []porcupine.Operation) bool {
	return b.run(model, ops) == porcupine.Ok
}

// opForm is how an operation of the partition appears in a candidate
// sub-history.
type opForm uint8

const (
	absent opForm = iota
	// asRecorded: with its recorded output and return.
	asRecorded
	// inFlight: cut while in flight (see dataModel), or left out when that
	// cannot change any state.
	inFlight
)

// minimize shrinks ops, one partition already shown not linearizable and
// sorted by call, to a small sub-history that is still not linearizable.
// minimal is false when the budget ran out before the result was 1-minimal.
//
// Plain greedy removal ("drop an operation if the rest is still illegal")
// finds nonsense in these models: drop the reserves that emptied a sku and a
// later "insufficient" is illegal on its own; drop write(1) and a read of 1
// is. Such a counterexample names a failure the service never had. So the
// failure is first pinned to one operation, the culprit, whose answer is
// impossible, and then only removals that keep it so are accepted:
//
//  1. Cut the history after its k-th return: the first k operations to
//     return keep their outcomes, those called by then but not yet returned
//     are in flight (they may take effect any time after their call, or
//     never; see dataModel), later ones go. A cut of a linearizable history
//     is linearizable, so an illegal cut is a sound witness. Binary search
//     finds k such that cut k is illegal and cut k-1 is not: the k-th
//     operation to return is the culprit, and cut k the starting point.
//  2. Greedy removal, latest call first, sped up delta-debugging style
//     (chunks of half the operations, then quarters, ..., then single
//     operations until none can go). A removal is kept iff the rest is still
//     illegal and becomes linearizable once the culprit is in flight instead
//     (its answer forgotten). The culprit is never removed.
//
// Throughout, an operation that refers to what a missing one produced (a
// confirm or cancel of the reservation a reserve created, a read of the value
// a write wrote) goes too: a dangling reference is illegal by itself.
//
// The result is illegal, is linearizable with the culprit in flight, and no
// other single operation can be removed keeping both true; when the budget
// ran out first, the culprit is only a best guess. Operations in flight in
// it carry their in-flight output and Return == Call.
func minimize(m dataModel, model porcupine.Model, ops []porcupine.Operation, budget *checkBudget) (kept []porcupine.Operation, culprit porcupine.Operation, minimal bool) {
	n := len(ops)
	cut := make([]porcupine.Operation, n)
	cutKeep := make([]bool, n)
	provided := map[string]bool{} // by some operation as recorded
	for i, op := range ops {
		cut[i] = op
		cut[i].Output, cutKeep[i] = m.inFlight(op.Input, op.Output)
		cut[i].Return = op.Call
		if p := m.provides(op.Input, op.Output); p != "" {
			provided[p] = true
		}
	}
	// render turns forms into a sub-history, without dangling references.
	render := func(forms []opForm) []porcupine.Operation {
		var present []porcupine.Operation
		for i, form := range forms {
			switch {
			case form == asRecorded:
				present = append(present, ops[i])
			case form == inFlight && cutKeep[i]:
				present = append(present, cut[i])
			}
		}
		have := map[string]bool{}
		for _, op := range present {
			have[m.provides(op.Input, op.Output)] = true
		}
		out := present[:0]
		for _, op := range present {
			if r := m.requires(op.Input, op.Output); r == "" || !provided[r] || have[r] {
				out = append(out, op)
			}
		}
		return out
	}

	// 1. The culprit.
	byReturn := make([]int, n)
	for i := range byReturn {
		byReturn[i] = i
	}
	sort.SliceStable(byReturn, func(a, b int) bool { return ops[byReturn[a]].Return < ops[byReturn[b]].Return })
	cutAfter := func(k int) []opForm {
		forms := make([]opForm, n)
		if k == 0 {
			return forms
		}
		t := ops[byReturn[k-1]].Return
		for j, i := range byReturn {
			if j < k {
				forms[i] = asRecorded
			} else if ops[i].Call <= t {
				forms[i] = inFlight
			}
		}
		return forms
	}
	lo, hi := 0, n // cut lo is taken as linearizable, cut hi is not
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if budget.illegal(model, render(cutAfter(mid))) {
			hi = mid
		} else {
			lo = mid
		}
	}
	blamed := byReturn[hi-1]
	forms := cutAfter(hi)

	// 2. Greedy removal. pass tries removing each chunk of size operations,
	// latest call first, and reports whether any removal was kept.
	pass := func(size int) (changed bool) {
		var live []int
		for i, form := range forms {
			if form != absent && i != blamed {
				live = append(live, i)
			}
		}
		for end := len(live); end > 0; end -= size {
			trial := append([]opForm(nil), forms...)
			for _, i := range live[max(0, end-size):end] {
				trial[i] = absent
			}
			if !budget.illegal(model, render(trial)) {
				continue
			}
			blameless := append([]opForm(nil), trial...)
			blameless[blamed] = inFlight
			if budget.legal(model, render(blameless)) {
				forms, changed = trial, true
			}
		}
		return changed
	}
	present := 0
	for _, form := range forms {
		if form != absent {
			present++
		}
	}
	for size := present / 2; size > 1; size /= 2 {
		pass(size)
	}
	for pass(1) {
	}
	return render(forms), ops[blamed], !budget.inconclusive
}
