// Command linearizability checks a history recorded by the lab runner for
// linearizability with porcupine (github.com/anishathalye/porcupine) and
// prints a JSON verdict. This comment is the reference for the format the
// runner writes and reads.
//
// # Usage
//
//	linearizability [--timeout 60s] [--minimize-timeout 60s] [--visualize FILE.html] < history.json
//
//	--timeout           bound on porcupine's search (also on each check while
//	                    shrinking a counterexample); 0 = no bound
//	--minimize-timeout  bound on finding and shrinking the counterexample
//	--visualize         also write porcupine's HTML view of the check to FILE
//
// Exit status: 0 when the check finished, linearizable or not; 1 when the
// visualisation could not be written (the verdict is still printed); 2 on bad
// input or usage (message on stderr, nothing on stdout); 3 when porcupine
// timed out (verdict printed with "result": "unknown").
//
// # Input (stdin, one JSON document)
//
//	{"model": "inventory" | "register",
//	 "initial": ...,
//	 "operations": [
//	   {"client": 3, "call": 12345, "return": 12400, "input": {...}, "output": {...}}]}
//
// "client" is an integer (default 0). "call" and "return" are int64
// nanoseconds from any common origin, return >= call. "return": null means
// no answer ever came (a client timeout): the operation may take effect at
// any time after its call, or never; its output must be {"status":"unknown"}.
// An answer of "unknown" with a "return" (e.g. a 503) means: took effect
// before the return, or never. Unknown keys are refused at the document and
// operation level and ignored inside "input" and "output" (which are echoed
// back verbatim).
//
// model "inventory": "initial" is {"<sku>": <available units>, ...}; every
// input carries a "sku" listed there, and the history is checked per sku
// (a reservation holds one sku).
//
//	input                                          output "status" (other keys)
//	{"op":"reserve","sku":"A","quantity":2}        "created" ("reservation":"<id>") | "insufficient" | "unknown"
//	{"op":"confirm","sku":"A","reservation":"id"}  "confirmed" | "conflict" | "unknown"
//	{"op":"cancel","sku":"A","reservation":"id"}   "cancelled" | "conflict" | "unknown"
//	{"op":"read","sku":"A"}                        "ok" ("available":N) | "unknown"
//
// Reserve is created iff available >= quantity (the units move to a held
// reservation; ids are unique), insufficient iff not. Confirm: confirmed iff
// held or already confirmed; conflict iff cancelled. Cancel: cancelled iff
// held (units go back) or already cancelled; conflict iff confirmed. Read:
// ok iff available == N. "unknown" allows both "took effect" and "did not";
// an unknown reserve that took effect holds its units under an id nobody
// knows, for good. Confirm or cancel of an id never created is illegal
// unless its status is unknown. Holds never expire in the model.
//
// model "register": "initial" is {"value": <any JSON value or null>}; one
// partition. Values compare as JSON (1 and "1" differ; key order does not
// matter).
//
//	{"op":"write","value":<v>}   "ok" | "unknown"
//	{"op":"read"}                "ok" ("value":<v or null>) | "unknown"
//
// # Output (stdout, one line)
//
//	{"model":"register","operations":120,"partitions":1,"result":"illegal",
//	 "linearizable":false,"failing_partitions":["register"],
//	 "counterexample":[{"client":2,"call_ms":12.3,"return_ms":15,
//	   "input":{...},"output":{...},"culprit":false}, ...],
//	 "counterexample_minimal":true}
//
// All keys are always present. "result" is "ok", "illegal" or "unknown";
// "linearizable" is true, false or null to match. "partitions" counts skus
// with operations (1 for register). "failing_partitions" are the skus (or
// "register") shown illegal, in order of first call.
//
// When illegal, "counterexample" is a small sub-history of the first failing
// partition, sorted by call (fed back in, with times in nanoseconds, it is
// illegal on its own). Exactly one operation has "culprit": true: its answer is
// impossible given the others (with it in flight instead, the rest is
// linearizable). No other single operation can be removed keeping that so
// (removing a reserve or write also removes the confirms, cancels or reads
// that refer to what it produced). "counterexample_minimal" false means
// shrinking ran out of time: then the counterexample is still illegal, but
// may be larger than needed, and the culprit is a best guess. An operation still in flight when the
// culprit answered, or never answered, appears with "output":
// {"status":"unknown"} and "return_ms": null. Times are milliseconds since
// the first call of the whole history, rounded to the microsecond.
// Otherwise "counterexample" is [] and "counterexample_minimal" false.
//
// # Layout
//
//   - main.go: this CLI.
//   - history.go: decoding and validating the input.
//   - model.go: what the models share, and how operations without an answer
//     are checked; inventory.go and register.go: the two models.
//   - check.go: the check and the verdict.
//   - minimize.go: shrinking a counterexample.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

const (
	exitIO       = 1
	exitBadInput = 2
	exitUnknown  = 3
)

func main() {
	fs := flag.NewFlagSet("linearizability", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 60*time.Second, "bound on porcupine's search; 0 = none")
	minimizeTimeout := fs.Duration("minimize-timeout", 60*time.Second, "bound on shrinking the counterexample")
	visualize := fs.String("visualize", "", "write porcupine's HTML visualisation to this file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(exitBadInput)
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "linearizability: the history is read from stdin; no arguments expected")
		os.Exit(exitBadInput)
	}

	history, err := ParseHistory(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "linearizability: bad input: %v\n", err)
		os.Exit(exitBadInput)
	}
	verdict, info := Check(history, Options{Timeout: *timeout, MinimizeTimeout: *minimizeTimeout})

	code := 0
	if *visualize != "" {
		if err := Visualize(history, info, *visualize); err != nil {
			fmt.Fprintf(os.Stderr, "linearizability: writing %s: %v\n", *visualize, err)
			code = exitIO
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(verdict); err != nil {
		fmt.Fprintf(os.Stderr, "linearizability: writing the verdict: %v\n", err)
		os.Exit(exitIO)
	}
	if verdict.Result == resultUnknown {
		code = exitUnknown
	}
	os.Exit(code)
}
