package kunit

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// readRecords reads testdata/name: kernel log records as a KUnit-enabled
// guest logged them while a module loaded, one JSON string a line (kwatch
// --json's kmsg messages).
func readRecords(t testing.TB, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var records []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r string
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		records = append(records, r)
	}
	return records
}

// The output of kwatch's testdata/kunit/cases (KW_BROKEN 1) and
// testdata/kunit/crash (KW_CRASH 1), each loaded by `kwatch --once --json`
// on the Rust 6.1 test kernel: the kmsg records between build_ok and the
// load's end.
func TestRecorded(t *testing.T) {
	const src = "/tmp/kunit-rec/cases/kwkunit.c"
	for file, want := range map[string][]Case{
		"linux-6.1-cases.jsonl": {
			{Suite: "kwkunit", Name: "kw_pass", Status: Pass},
			{Suite: "kwkunit", Name: "kw_double_two", Status: Fail, File: src, Line: 14,
				Message: "Expected kw_double(2) == 4, but\nkw_double(2) == 5"},
			{Suite: "kwkunit", Name: "kw_skip", Status: Skip, Message: "not on this machine"},
			{Suite: "kwkunit", Name: "kw_double_each", Status: Fail, Param: "x=2", File: src, Line: 27,
				Message: "Expected kw_double(*x) == *x * 2, but\nkw_double(*x) == 5\n*x * 2 == 4"},
		},
		// The oops in the second case, its report and what came after it
		// until kwatch stopped waiting.
		"linux-6.1-crash.jsonl": {
			{Suite: "kwkcrash", Name: "kw_first", Status: Pass},
			{Suite: "kwkcrash", Name: "case 2", Status: Crash, Message: "did not finish"},
			{Suite: "kwkcrash", Name: "case 3", Status: Crash, Message: "not run: an earlier case did not finish"},
		},
	} {
		t.Run(file, func(t *testing.T) {
			p := NewParser()
			for _, r := range readRecords(t, filepath.Join("testdata", file)) {
				p.Feed(r)
			}
			if got := p.Finish(); !reflect.DeepEqual(got, want) {
				t.Errorf("got\n%#v\nwant\n%#v", got, want)
			}
		})
	}
}
