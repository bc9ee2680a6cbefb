package command

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the error table in docs/mqtt.md from command/errors.go")

// repoFile is a path from the repository root, found from this file so a
// test that moved the working directory cannot misplace it.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	_, me, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(me), "..", rel)
}

// Each kind has its PUBACK reason (issue 16: an unknown recipient is not
// "payload format invalid"); a few codes override it.
func TestErrorTableKinds(t *testing.T) {
	cases := []struct {
		code   int
		kind   Kind
		reason byte
	}{
		{CodeJSON, KindParameter, 0x99},
		{CodeMsgBody, KindParameter, 0x99},
		{CodeUnknownUser, KindNotFound, 0x80},
		{CodeToNotRegistered, KindNotFound, 0x80},
		{CodeNotFriends, KindPermission, 0x87},
		{CodeMuted, KindPermission, 0x87},
		{CodeOpenIMNeedsAdmin, KindPermission, 0x87},
		{CodeCallbackFailed, KindPermission, 0x87},
		{CodeTooLong, KindQuota, 0x97},
		{CodeRateLimited, KindRetryLater, 0x97},
		{CodeRetry, KindRetryLater, 0x83},
		{CodeInternal, KindInternal, 0x83},
		{CodeCallbackTimeout, KindInternal, 0x83},
		{125000, KindPermission, 0x87}, // an app's own callback code
		{12345, KindUnknown, 0x80},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			if k, r := KindOf(tc.code), MQTTReason(tc.code); k != tc.kind || r != tc.reason {
				t.Fatalf("code %d: kind %s reason 0x%02X, want %s 0x%02X", tc.code, k, r, tc.kind, tc.reason)
			}
		})
	}
	retry := map[Kind]bool{KindRetryLater: true, KindInternal: true}
	for k := KindUnknown; k <= KindInternal; k++ {
		if k.Retryable() != retry[k] {
			t.Errorf("%s.Retryable() = %v", k, k.Retryable())
		}
	}
}

// Every row names the constant that holds its code, and every constant of
// errors.go has a row: parsed from the source, so a renamed or added
// constant cannot slip past the table.
func TestErrorTableNames(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), repoFile(t, "command/errors.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]int{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					consts[n.Name], _ = strconv.Atoi(lit.Value)
				}
			}
		}
	}
	delete(consts, "CodeCallbackCustomFirst")
	delete(consts, "CodeCallbackCustomLast")
	rows := Codes()
	if len(rows) != len(consts) {
		t.Errorf("%d rows, %d Code constants", len(rows), len(consts))
	}
	for _, ci := range rows {
		if v, ok := consts[ci.Name]; !ok || v != ci.Code {
			t.Errorf("row %d is named %s, which is %d", ci.Code, ci.Name, v)
		}
		if ci.Kind == KindUnknown {
			t.Errorf("row %d has no kind", ci.Code)
		}
	}
}

// No Tencent code is written as a number where an error is made: the
// table's names are the one spelling.
func TestNoLiteralCodes(t *testing.T) {
	lit := regexp.MustCompile(`(Errorf|fail)\((w, [^,]+, )?[0-9]{4,}|ErrorCode: [0-9]{4,}|ResultCode: [0-9]{4,}`)
	for _, dir := range []string{"command", "rest", "hooks", "media", "push"} {
		files, _ := filepath.Glob(repoFile(t, dir+"/*.go"))
		for _, fn := range files {
			if strings.HasSuffix(fn, "_test.go") {
				continue
			}
			b, err := os.ReadFile(fn)
			if err != nil {
				t.Fatal(err)
			}
			for i, line := range strings.Split(string(b), "\n") {
				if m := lit.FindString(line); m != "" {
					t.Errorf("%s:%d: %s — name the code (command/errors.go)", filepath.Base(fn), i+1, m)
				}
			}
		}
	}
}

// docs/mqtt.md shows the table as the code has it.
func TestErrorTableDoc(t *testing.T) {
	const begin, end = "<!-- error-table:begin -->\n", "<!-- error-table:end -->"
	path := repoFile(t, "docs/mqtt.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/mqtt.md has no %q … %q markers", begin, end)
	}
	want := CodeTableMarkdown()
	if got := doc[i+len(begin) : j]; got != want {
		if *updateDocs {
			if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("docs/mqtt.md's error table differs from command/errors.go; run go test ./command -run TestErrorTableDoc -update-docs\n--- doc\n%s--- code\n%s", got, want)
	}
	// Each row's reason is what the doc's own prose promises for its kind.
	for _, line := range strings.Split(want, "\n") {
		if strings.Contains(line, "| not found |") && !strings.Contains(line, "0x80") {
			t.Errorf("a not-found code without 0x80: %s", line)
		}
	}
}

func TestClip(t *testing.T) {
	cases := []struct {
		in   string
		want int // bytes kept before the ellipsis; -1: unchanged
	}{
		{"alice", -1},
		{strings.Repeat("a", 200), -1},
		{strings.Repeat("a", 201), 200},
		{strings.Repeat("a", 199) + "é", 199}, // never half a rune
	}
	for _, tc := range cases {
		got := clip(tc.in)
		if tc.want < 0 && got != tc.in || tc.want >= 0 && got != tc.in[:tc.want]+"…" {
			t.Errorf("clip(%d bytes) = %d bytes %q…", len(tc.in), len(got), got[max(0, len(got)-8):])
		}
	}
}
