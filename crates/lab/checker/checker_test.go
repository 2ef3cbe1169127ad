package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testOp is one operation of a hand-made history; times in milliseconds.
type testOp struct {
	client    int
	call, ret int64 // ret < 0: unknown outcome ("return": null)
	in, out   string
}

// unknownReturn marks an operation whose outcome never came back.
const unknownReturn = -1

func op(client int, call, ret int64, in, out string) testOp {
	return testOp{client, call, ret, in, out}
}

func historyDoc(model, initial string, ops ...testOp) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"model":%q,"initial":%s,"operations":[`, model, initial)
	for i, o := range ops {
		if i > 0 {
			b.WriteString(",")
		}
		ret := "null"
		if o.ret >= 0 {
			ret = fmt.Sprint(o.ret * 1e6)
		}
		fmt.Fprintf(&b, `{"client":%d,"call":%d,"return":%s,"input":%s,"output":%s}`,
			o.client, o.call*1e6, ret, o.in, o.out)
	}
	b.WriteString("]}")
	return b.String()
}

func check(t *testing.T, doc string) Verdict {
	t.Helper()
	h, err := ParseHistory(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("parsing %s: %v", doc, err)
	}
	v, _ := Check(h, Options{Timeout: 10 * time.Second, MinimizeTimeout: 10 * time.Second})
	return v
}

func assertLinearizable(t *testing.T, want bool, model, initial string, ops ...testOp) Verdict {
	t.Helper()
	v := check(t, historyDoc(model, initial, ops...))
	if v.Linearizable == nil || *v.Linearizable != want {
		t.Fatalf("linearizable: want %v, got verdict %+v", want, v)
	}
	if !want {
		assertMinimalCounterexample(t, model, initial, v)
	}
	return v
}

// assertMinimalCounterexample re-checks a counterexample on its own, against
// what minimize promises: it is illegal; one operation (the culprit) has an
// impossible answer, so with that answer cut to unknown it is linearizable;
// and removing any other single operation (with what refers to it) makes it
// linearizable or leaves a failure that does not need the culprit's answer.
func assertMinimalCounterexample(t *testing.T, model, initial string, v Verdict) {
	t.Helper()
	if len(v.Counterexample) == 0 || !v.CounterexampleMinimal {
		t.Fatalf("want a minimal counterexample, got %+v", v)
	}
	ops := make([]testOp, len(v.Counterexample))
	for i, c := range v.Counterexample {
		ret := int64(unknownReturn)
		if c.ReturnMs != nil {
			ret = int64(*c.ReturnMs)
		}
		ops[i] = op(c.Client, int64(c.CallMs), ret, string(c.Input), string(c.Output))
	}
	illegal := func(ops []testOp) bool {
		return check(t, historyDoc(model, initial, ops...)).Result == resultIllegal
	}
	if !illegal(ops) {
		t.Fatalf("counterexample %s is not illegal on its own", counterexampleString(v))
	}
	for c := range ops {
		if illegal(cutOutcome(ops, c)) {
			continue
		}
		minimal := true
		for x := range ops {
			rest := withoutDependents(ops, x)
			at := indexOf(rest, ops[c]) // -1: x's removal takes the culprit with it
			if x != c && at >= 0 && illegal(rest) && !illegal(cutOutcome(rest, at)) {
				minimal = false
			}
		}
		if minimal {
			return
		}
	}
	t.Fatalf("counterexample %s is not minimal", counterexampleString(v))
}

// cutOutcome forgets the answer of ops[i]: an operation that changes no state
// goes, any other gets status unknown and no return.
func cutOutcome(ops []testOp, i int) []testOp {
	o := ops[i]
	rest := append(append([]testOp(nil), ops[:i]...), ops[i+1:]...)
	pure := strings.Contains(o.in, `"read"`) || strings.Contains(o.out, "insufficient") || strings.Contains(o.out, "conflict")
	if pure {
		return rest
	}
	return append(rest, op(o.client, o.call, unknownReturn, o.in, unknown))
}

func indexOf(ops []testOp, o testOp) int {
	for i := range ops {
		if ops[i] == o {
			return i
		}
	}
	return -1
}

// withoutDependents removes ops[i] and the operations that refer to what it
// produced (its reservation id, the value it wrote), as minimize does.
func withoutDependents(ops []testOp, i int) []testOp {
	var produced struct {
		Reservation string          `json:"reservation"` // from a created reserve's output
		Value       json.RawMessage `json:"value"`       // from a write's input
	}
	_ = json.Unmarshal([]byte(ops[i].out), &produced)
	produced.Value = nil
	if strings.Contains(ops[i].in, `"write"`) {
		_ = json.Unmarshal([]byte(ops[i].in), &produced)
	}
	var rest []testOp
	for j, o := range ops {
		var refers struct {
			Reservation string          `json:"reservation"`
			Value       json.RawMessage `json:"value"`
		}
		_ = json.Unmarshal([]byte(o.in), &refers)
		if produced.Reservation != "" && refers.Reservation == produced.Reservation {
			continue
		}
		_ = json.Unmarshal([]byte(o.out), &refers)
		if produced.Value != nil && o.in == readReg && bytes.Equal(refers.Value, produced.Value) {
			continue
		}
		if j != i {
			rest = append(rest, o)
		}
	}
	return rest
}

func counterexampleString(v Verdict) string {
	b, _ := json.Marshal(v.Counterexample)
	return string(b)
}

// ---------------------------------------------------------------------------
// Register

const (
	regNull = `{"value":null}`
	write1  = `{"op":"write","value":1}`
	write2  = `{"op":"write","value":2}`
	write3  = `{"op":"write","value":3}`
	readReg = `{"op":"read"}`
	writeOK = `{"status":"ok"}`
	unknown = `{"status":"unknown"}`
	gotNull = `{"status":"ok","value":null}`
	got1    = `{"status":"ok","value":1}`
	got2    = `{"status":"ok","value":2}`
	got3    = `{"status":"ok","value":3}`
)

func TestRegisterLinearizableHistory(t *testing.T) {
	v := assertLinearizable(t, true, "register", regNull,
		op(0, 0, 5, readReg, gotNull),
		op(0, 10, 20, write1, writeOK),
		op(1, 15, 25, readReg, gotNull), // concurrent with write(1): may see either
		op(1, 30, 35, readReg, got1),
		op(0, 40, 50, write2, writeOK),
		op(1, 45, 55, readReg, got1),
		op(2, 46, 56, readReg, got2),
		op(1, 60, 65, readReg, got2),
	)
	if v.Result != resultOK || v.Partitions != 1 || v.Operations != 8 || len(v.Counterexample) != 0 {
		t.Fatalf("unexpected verdict %+v", v)
	}
}

func TestRegisterStaleReadShrinksToTheSmallestStaleRead(t *testing.T) {
	v := assertLinearizable(t, false, "register", regNull,
		op(0, 0, 5, readReg, gotNull),
		op(0, 10, 20, write1, writeOK),
		op(1, 25, 30, readReg, got1),
		op(0, 40, 50, write2, writeOK),
		op(1, 55, 60, readReg, got2),
		op(2, 70, 80, readReg, got1), // stale: write(2) returned at 50
		op(0, 90, 100, write3, writeOK),
		op(1, 110, 120, readReg, got3),
	)
	if len(v.Counterexample) > 3 {
		t.Fatalf("counterexample has %d ops: %s", len(v.Counterexample), counterexampleString(v))
	}
	stale := v.Counterexample[len(v.Counterexample)-1]
	if stale.CallMs != 70 || *stale.ReturnMs != 80 || string(stale.Output) != got1 || !stale.Culprit {
		t.Fatalf("counterexample does not end with the stale read: %s", counterexampleString(v))
	}
	if !slices.Equal(v.FailingPartitions, []string{"register"}) {
		t.Fatalf("failing partitions %v", v.FailingPartitions)
	}
}

func TestRegisterUnknownWriteMayOrMayNotHappen(t *testing.T) {
	// With a response time, the write happened before it or never.
	assertLinearizable(t, true, "register", regNull, op(0, 0, 10, write1, unknown), op(1, 20, 30, readReg, got1))
	assertLinearizable(t, true, "register", regNull, op(0, 0, 10, write1, unknown), op(1, 20, 30, readReg, gotNull))
	assertLinearizable(t, false, "register", regNull,
		op(0, 0, 10, write1, unknown), op(1, 20, 30, readReg, gotNull), op(1, 40, 50, readReg, got1))
	// Without one, it may land at any time after its call, but only once.
	assertLinearizable(t, true, "register", regNull,
		op(0, 0, unknownReturn, write1, unknown), op(1, 20, 30, readReg, gotNull), op(1, 40, 50, readReg, got1))
	assertLinearizable(t, false, "register", regNull,
		op(0, 0, unknownReturn, write1, unknown), op(1, 20, 30, readReg, got1), op(1, 40, 50, readReg, gotNull))
}

func TestRegisterCounterexampleKeepsAWriteStillInFlight(t *testing.T) {
	// write(1) is still running when the stale read returns; the read at 10
	// shows it took effect before write(2).
	v := assertLinearizable(t, false, "register", regNull,
		op(0, 0, 100, write1, writeOK),
		op(1, 10, 20, readReg, got1),
		op(2, 30, 40, write2, writeOK),
		op(1, 50, 60, readReg, got1),
	)
	want := []string{
		`{"client":0,"call_ms":0,"return_ms":null,"input":{"op":"write","value":1},"output":{"status":"unknown"},"culprit":false}`,
		`{"client":1,"call_ms":10,"return_ms":20,"input":{"op":"read"},"output":{"status":"ok","value":1},"culprit":false}`,
		`{"client":2,"call_ms":30,"return_ms":40,"input":{"op":"write","value":2},"output":{"status":"ok"},"culprit":false}`,
		`{"client":1,"call_ms":50,"return_ms":60,"input":{"op":"read"},"output":{"status":"ok","value":1},"culprit":true}`,
	}
	if got := counterexampleString(v); got != "["+strings.Join(want, ",")+"]" {
		t.Fatalf("counterexample %s", got)
	}
}

func TestRegisterReadOfAValueNeverWritten(t *testing.T) {
	v := assertLinearizable(t, false, "register", `{"value":"v0"}`,
		op(0, 0, 10, `{"op":"write","value":"v1"}`, writeOK),
		op(1, 20, 30, readReg, `{"status":"ok","value":"v9"}`),
	)
	if len(v.Counterexample) != 1 {
		t.Fatalf("want just the bad readReg, got %s", counterexampleString(v))
	}
}

// ---------------------------------------------------------------------------
// Inventory

const stock = `{"sku-a":5,"sku-b":3}`

func reserve(sku string, quantity int) string {
	return fmt.Sprintf(`{"op":"reserve","sku":%q,"quantity":%d}`, sku, quantity)
}

func created(id string) string { return fmt.Sprintf(`{"status":"created","reservation":%q}`, id) }

func onHold(op, id string) string {
	return fmt.Sprintf(`{"op":%q,"sku":"sku-a","reservation":%q}`, op, id)
}

func readStock(sku string) string { return fmt.Sprintf(`{"op":"read","sku":%q}`, sku) }

func available(n int) string { return fmt.Sprintf(`{"status":"ok","available":%d}`, n) }

func status(s string) string { return fmt.Sprintf(`{"status":%q}`, s) }

func TestInventoryConcurrentReservesThatFit(t *testing.T) {
	v := assertLinearizable(t, true, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(1, 5, 15, reserve("sku-a", 3), created("r2")),
		op(2, 6, 16, readStock("sku-a"), available(3)), // after r1 only
		op(3, 20, 30, reserve("sku-a", 1), status("insufficient")),
		op(4, 20, 30, reserve("sku-b", 3), created("r3")),
		op(0, 40, 50, readStock("sku-a"), available(0)),
		op(0, 40, 50, onHold("confirm", "r1"), status("confirmed")),
	)
	if v.Partitions != 2 {
		t.Fatalf("want one partition per sku, got %+v", v)
	}
}

func TestInventoryOversellIsNotLinearizable(t *testing.T) {
	v := assertLinearizable(t, false, "inventory", stock,
		op(4, 0, 5, reserve("sku-b", 1), created("b1")),
		op(0, 10, 20, reserve("sku-a", 3), created("r1")),
		op(1, 12, 22, reserve("sku-a", 3), created("r2")), // 6 of 5 units
		op(2, 30, 40, onHold("confirm", "r1"), status("confirmed")),
		op(3, 30, 40, onHold("confirm", "r2"), status("confirmed")),
		op(4, 30, 40, readStock("sku-b"), available(2)),
	)
	if !slices.Equal(v.FailingPartitions, []string{"sku-a"}) {
		t.Fatalf("failing partitions %v", v.FailingPartitions)
	}
	if len(v.Counterexample) != 2 || !strings.Contains(string(v.Counterexample[1].Output), "r2") {
		t.Fatalf("want the two created holds, got %s", counterexampleString(v))
	}
}

func TestInventoryReadOfAWrongCount(t *testing.T) {
	assertLinearizable(t, true, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(1, 5, 8, readStock("sku-a"), available(5)), // concurrent: before the reserve
	)
	v := assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(1, 20, 30, readStock("sku-a"), available(5)),
	)
	if len(v.Counterexample) != 2 {
		t.Fatalf("want reserve and readReg, got %s", counterexampleString(v))
	}
	assertLinearizable(t, false, "inventory", stock, op(1, 20, 30, readStock("sku-b"), available(4)))
}

func TestInventoryUnknownReserveMayOrMayNotTakeItsUnits(t *testing.T) {
	for _, ret := range []int64{10, unknownReturn} {
		// Taken, by a hold nobody knows the id of.
		assertLinearizable(t, true, "inventory", stock,
			op(0, 0, ret, reserve("sku-a", 2), unknown),
			op(1, 20, 30, readStock("sku-a"), available(3)),
			op(1, 40, 50, reserve("sku-a", 4), status("insufficient")),
		)
		// Not taken.
		assertLinearizable(t, true, "inventory", stock,
			op(0, 0, ret, reserve("sku-a", 2), unknown),
			op(1, 20, 30, readStock("sku-a"), available(5)),
			op(1, 40, 50, reserve("sku-a", 4), created("r1")),
		)
		// Neither explains 4, and what was taken stays taken.
		assertLinearizable(t, false, "inventory", stock,
			op(0, 0, ret, reserve("sku-a", 2), unknown),
			op(1, 20, 30, readStock("sku-a"), available(4)),
		)
		assertLinearizable(t, false, "inventory", stock,
			op(0, 0, ret, reserve("sku-a", 2), unknown),
			op(1, 20, 30, readStock("sku-a"), available(3)),
			op(1, 40, 50, readStock("sku-a"), available(5)),
		)
	}
	// Without a response it may land after a later read.
	assertLinearizable(t, true, "inventory", stock,
		op(0, 0, unknownReturn, reserve("sku-a", 2), unknown),
		op(1, 20, 30, readStock("sku-a"), available(5)),
		op(1, 40, 50, readStock("sku-a"), available(3)),
	)
	// It cannot take units that are not there.
	assertLinearizable(t, false, "inventory", `{"sku-a":1}`,
		op(0, 0, 10, reserve("sku-a", 2), unknown),
		op(1, 20, 30, readStock("sku-a"), available(-1)),
	)
}

func TestInventoryCancelReturnsUnits(t *testing.T) {
	history := []testOp{
		op(0, 0, 10, reserve("sku-a", 5), created("r1")),
		op(1, 20, 30, reserve("sku-a", 1), status("insufficient")),
		op(0, 40, 50, onHold("cancel", "r1"), status("cancelled")),
		op(0, 55, 58, onHold("cancel", "r1"), status("cancelled")), // idempotent
		op(1, 60, 70, reserve("sku-a", 2), created("r2")),
	}
	assertLinearizable(t, true, "inventory", stock, append(history, op(2, 80, 90, readStock("sku-a"), available(3)))...)
	assertLinearizable(t, false, "inventory", stock, append(history, op(2, 80, 90, readStock("sku-a"), available(0)))...)
	// Cancelling a confirmed hold is a conflict and returns nothing.
	assertLinearizable(t, true, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, 30, onHold("confirm", "r1"), status("confirmed")),
		op(0, 40, 50, onHold("cancel", "r1"), status("conflict")),
		op(0, 60, 70, readStock("sku-a"), available(3)),
	)
	assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, 30, onHold("confirm", "r1"), status("confirmed")),
		op(0, 40, 50, onHold("cancel", "r1"), status("cancelled")),
	)
	// An unknown cancel may or may not have given the units back.
	for _, n := range []int{3, 5} {
		assertLinearizable(t, true, "inventory", stock,
			op(0, 0, 10, reserve("sku-a", 2), created("r1")),
			op(0, 20, 30, onHold("cancel", "r1"), unknown),
			op(0, 40, 50, readStock("sku-a"), available(n)),
		)
	}
}

func TestInventoryConfirmAfterCancelIsAConflict(t *testing.T) {
	prefix := []testOp{
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, 30, onHold("cancel", "r1"), status("cancelled")),
	}
	assertLinearizable(t, true, "inventory", stock,
		append(prefix, op(1, 40, 50, onHold("confirm", "r1"), status("conflict")))...)
	v := assertLinearizable(t, false, "inventory", stock,
		append(prefix, op(1, 40, 50, onHold("confirm", "r1"), status("confirmed")))...)
	if len(v.Counterexample) != 3 {
		t.Fatalf("want reserve, cancel, confirm, got %s", counterexampleString(v))
	}
	// A hold that was never cancelled does not conflict, nor one never confirmed.
	assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(1, 20, 30, onHold("confirm", "r1"), status("conflict")),
	)
	assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(1, 20, 30, onHold("cancel", "r1"), status("conflict")),
	)
	// Concurrent with the cancel, the confirm may win instead.
	assertLinearizable(t, true, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, 30, onHold("cancel", "r1"), status("conflict")),
		op(1, 15, 35, onHold("confirm", "r1"), status("confirmed")),
	)
}

func TestInventoryUnknownReservationIds(t *testing.T) {
	assertLinearizable(t, false, "inventory", stock, op(0, 0, 10, onHold("confirm", "nope"), status("confirmed")))
	assertLinearizable(t, false, "inventory", stock, op(0, 0, 10, onHold("cancel", "nope"), status("conflict")))
	assertLinearizable(t, true, "inventory", stock, op(0, 0, 10, onHold("cancel", "nope"), unknown))
	// A confirm cannot precede the reserve that created its id.
	assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, onHold("confirm", "r1"), status("confirmed")),
		op(1, 20, 30, reserve("sku-a", 1), created("r1")),
	)
	// Ids are unique.
	assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 1), created("r1")),
		op(1, 20, 30, reserve("sku-a", 1), created("r1")),
	)
}

func TestMinimizeKeepsTheReserveAConfirmRefersTo(t *testing.T) {
	// The violation is the late read; dropping the reserve alone would leave
	// the confirm dangling, which must not count as "still illegal".
	v := assertLinearizable(t, false, "inventory", stock,
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, 30, onHold("confirm", "r1"), status("confirmed")),
		op(1, 40, 50, readStock("sku-a"), available(5)),
	)
	for _, c := range v.Counterexample {
		if strings.Contains(string(c.Input), "confirm") {
			t.Fatalf("confirm is not needed: %s", counterexampleString(v))
		}
	}
}

func TestCounterexampleNamesTheRealFailure(t *testing.T) {
	// Dropping the reserve would make the "insufficient" illegal on its own;
	// the counterexample must still be about the wrong read.
	v := assertLinearizable(t, false, "inventory", `{"sku-a":3}`,
		op(1, 0, 30, reserve("sku-a", 2), status("insufficient")),
		op(0, 5, 10, reserve("sku-a", 2), created("r1")),
		op(2, 40, 50, readStock("sku-a"), available(3)),
	)
	if len(v.Counterexample) != 2 || string(v.Counterexample[1].Output) != available(3) {
		t.Fatalf("want the reserve and the wrong read, got %s", counterexampleString(v))
	}
}

func TestLongHistoryShrinks(t *testing.T) {
	var ops []testOp
	for i := int64(0); i < 500; i++ {
		ops = append(ops, op(0, i*100, i*100+10, fmt.Sprintf(`{"op":"write","value":%d}`, i), writeOK))
		ops = append(ops, op(1, i*100+20, i*100+30, readReg, fmt.Sprintf(`{"status":"ok","value":%d}`, i)))
	}
	ops[601] = op(1, 300*100+20, 300*100+30, readReg, `{"status":"ok","value":299}`)
	start := time.Now()
	v := assertLinearizable(t, false, "register", regNull, ops...)
	if len(v.Counterexample) != 3 || time.Since(start) > 20*time.Second {
		t.Fatalf("took %v for %s", time.Since(start), counterexampleString(v))
	}
}

func TestInventoryOperationsThatNeverAnswered(t *testing.T) {
	// A reserve that did not fit when called may take its units later, after
	// a cancel gave them back.
	prefix := []testOp{
		op(0, 0, 10, reserve("sku-b", 3), created("r1")),
		op(1, 20, unknownReturn, reserve("sku-b", 3), unknown),
		op(0, 30, 40, readStock("sku-b"), available(0)),
		op(0, 50, 60, `{"op":"cancel","sku":"sku-b","reservation":"r1"}`, status("cancelled")),
	}
	for _, n := range []int{0, 3} {
		assertLinearizable(t, true, "inventory", stock, append(prefix, op(2, 70, 80, readStock("sku-b"), available(n)))...)
	}
	assertLinearizable(t, false, "inventory", stock, append(prefix, op(2, 70, 80, readStock("sku-b"), available(1)))...)
	// Once taken, always taken.
	assertLinearizable(t, false, "inventory", stock, append(prefix,
		op(2, 70, 80, readStock("sku-b"), available(0)), op(2, 90, 95, readStock("sku-b"), available(3)))...)

	// Each takes effect at most once, whatever else is in flight.
	inFlight := []testOp{
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, 30, onHold("confirm", "r1"), status("confirmed")),
		op(1, 40, unknownReturn, onHold("cancel", "r1"), unknown), // can never apply
		op(2, 40, unknownReturn, reserve("sku-a", 1), unknown),
	}
	assertLinearizable(t, true, "inventory", stock, append(inFlight, op(3, 50, 60, readStock("sku-a"), available(2)))...)
	assertLinearizable(t, false, "inventory", stock, append(inFlight,
		op(3, 50, 60, readStock("sku-a"), available(2)), op(3, 70, 80, readStock("sku-a"), available(1)))...)

	// A confirm without an answer may win over a later cancel, or not.
	confirming := []testOp{
		op(0, 0, 10, reserve("sku-a", 2), created("r1")),
		op(0, 20, unknownReturn, onHold("confirm", "r1"), unknown),
	}
	assertLinearizable(t, true, "inventory", stock, append(confirming,
		op(1, 30, 40, onHold("cancel", "r1"), status("conflict")), op(1, 50, 60, readStock("sku-a"), available(3)))...)
	assertLinearizable(t, true, "inventory", stock, append(confirming,
		op(1, 30, 40, onHold("cancel", "r1"), status("cancelled")), op(1, 50, 60, readStock("sku-a"), available(5)))...)
	assertLinearizable(t, false, "inventory", stock, append(confirming,
		op(1, 30, 40, onHold("cancel", "r1"), status("cancelled")), op(1, 50, 60, readStock("sku-a"), available(3)))...)
}

func TestRegisterWriteThatNeverAnsweredLandsOnce(t *testing.T) {
	history := []testOp{
		op(0, 0, unknownReturn, write1, unknown),
		op(1, 10, 20, readReg, got1),
		op(1, 30, 40, write2, writeOK),
		op(1, 50, 60, readReg, got1), // write(1) may land again? no: only once
	}
	assertLinearizable(t, false, "register", regNull, history...)
	history[1] = op(1, 10, 20, readReg, gotNull)
	assertLinearizable(t, true, "register", regNull, history...)
	assertLinearizable(t, false, "register", regNull, append(history, op(1, 70, 80, readReg, got2))...)
}

// simulateInventory runs a correct single-node service against random
// requests from 20 clients and records the history. Each operation takes
// effect at a point inside its interval; about 3% get no useful answer, half
// of those no return at all.
func simulateInventory(seed int64, n int) []testOp {
	rng := rand.New(rand.NewSource(seed))
	availableUnits := map[string]int{"sku-a": 5, "sku-b": 3}
	type reservation struct {
		sku, status string
		quantity    int
	}
	known := map[string]*reservation{} // ids some client saw
	var ids []string
	var ops []testOp
	now := int64(0)
	for i := 0; i < n; i++ {
		now += 1 + rng.Int63n(3)
		call, ret := now-rng.Int63n(5), now+rng.Int63n(5)
		sku := []string{"sku-a", "sku-b"}[rng.Intn(2)]
		var in, out string
		switch k := rng.Float64(); {
		case k < 0.35:
			q := 1 + rng.Intn(2)
			in = reserve(sku, q)
			out = status("insufficient")
			if availableUnits[sku] >= q {
				availableUnits[sku] -= q
				id := fmt.Sprintf("r%d", i)
				out = created(id)
				known[id] = &reservation{sku, "held", q}
				ids = append(ids, id)
			}
		case k < 0.65 && len(ids) > 0:
			id := ids[rng.Intn(len(ids))]
			r := known[id]
			sku = r.sku
			if rng.Intn(2) == 0 {
				in = fmt.Sprintf(`{"op":"confirm","sku":%q,"reservation":%q}`, sku, id)
				out = status("conflict")
				if r.status != "cancelled" {
					r.status, out = "confirmed", status("confirmed")
				}
			} else {
				in = fmt.Sprintf(`{"op":"cancel","sku":%q,"reservation":%q}`, sku, id)
				out = status("conflict")
				if r.status != "confirmed" {
					if r.status == "held" {
						availableUnits[sku] += r.quantity
					}
					r.status, out = "cancelled", status("cancelled")
				}
			}
		default:
			in, out = readStock(sku), available(availableUnits[sku])
		}
		if rng.Float64() < 0.03 {
			if strings.Contains(out, "created") { // nobody learns the id
				ids = ids[:len(ids)-1]
			}
			out = unknown
			if rng.Intn(2) == 0 {
				ret = unknownReturn
			}
		}
		ops = append(ops, op(i%20, call, ret, in, out))
	}
	return ops
}

func TestSimulatedInventoryHistories(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		ops := simulateInventory(seed, 2000)
		v := check(t, historyDoc("inventory", stock, ops...))
		if v.Result != resultOK {
			t.Fatalf("seed %d: correct service judged %+v", seed, v)
		}
		// Break one late read (3 becomes 13): it must be found, quickly, and blamed.
		var wrong testOp
		for i := 1500; i < len(ops); i++ {
			if ops[i].ret != unknownReturn && strings.Contains(ops[i].out, "available") {
				ops[i].out = strings.Replace(ops[i].out, `"available":`, `"available":1`, 1)
				wrong = ops[i]
				break
			}
		}
		start := time.Now()
		v = check(t, historyDoc("inventory", stock, ops...))
		if v.Result != resultIllegal || !v.CounterexampleMinimal || time.Since(start) > 10*time.Second {
			t.Fatalf("seed %d: broken read judged %+v in %v", seed, v, time.Since(start))
		}
		i := slices.IndexFunc(v.Counterexample, func(c CounterexampleOp) bool { return c.Culprit })
		if i < 0 || string(v.Counterexample[i].Output) != wrong.out {
			t.Fatalf("seed %d: counterexample %s", seed, counterexampleString(v))
		}
	}
}

// ---------------------------------------------------------------------------
// Input and CLI

func TestBadInputIsRefused(t *testing.T) {
	for name, doc := range map[string]string{
		"model":             `{"model":"queue","initial":{},"operations":[]}`,
		"unknown key":       `{"model":"register","initial":{"value":null},"operations":[],"extra":1}`,
		"sku not stock":     historyDoc("inventory", stock, op(0, 0, 1, readStock("sku-z"), available(1))),
		"return < call":     historyDoc("register", regNull, op(0, 5, 1, readReg, gotNull)),
		"bad status":        historyDoc("register", regNull, op(0, 0, 1, readReg, `{"status":"created"}`)),
		"no available":      historyDoc("inventory", stock, op(0, 0, 1, readStock("sku-a"), `{"status":"ok"}`)),
		"no quantity":       historyDoc("inventory", stock, op(0, 0, 1, `{"op":"reserve","sku":"sku-a"}`, unknown)),
		"trailing data":     `{"model":"register","initial":{"value":null},"operations":[]} {}`,
		"missing return":    `{"model":"register","initial":{"value":null},"operations":[{"call":1,"input":{"op":"read"},"output":{"status":"unknown"}}]}`,
		"no initial":        `{"model":"register","operations":[]}`,
		"answer, no return": historyDoc("register", regNull, op(0, 0, unknownReturn, readReg, got1)),
	} {
		if _, err := ParseHistory(strings.NewReader(doc)); err == nil {
			t.Errorf("%s: accepted %s", name, doc)
		}
	}
}

// TestMain lets the CLI tests run this test binary as the command itself.
func TestMain(m *testing.M) {
	if os.Getenv("LINEARIZABILITY_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func runCLI(t *testing.T, stdin string, args ...string) (stdout string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "LINEARIZABILITY_RUN_MAIN=1")
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String(), exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func TestCLIExitCodesAndVisualization(t *testing.T) {
	html := filepath.Join(t.TempDir(), "history.html")
	stale := historyDoc("register", regNull,
		op(0, 0, 10, write1, writeOK), op(0, 20, 30, write2, writeOK), op(1, 40, 50, readReg, got1))
	stdout, code := runCLI(t, stale, "--timeout", "5s", "--visualize", html)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var v Verdict
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.Linearizable == nil || *v.Linearizable {
		t.Fatalf("verdict %q: %v", stdout, err)
	}
	if page, err := os.ReadFile(html); err != nil || !bytes.Contains(page, []byte("<html")) {
		t.Fatalf("visualization not written: %v", err)
	}
	if _, code := runCLI(t, `{"model":"register"`); code != exitBadInput {
		t.Fatalf("bad input: exit %d", code)
	}
	if _, code := runCLI(t, historyDoc("register", regNull), "--nope"); code != exitBadInput {
		t.Fatalf("bad flag: exit %d", code)
	}
}
