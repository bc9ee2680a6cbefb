package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Users read README.md and docs/ from a clone, nothing else: every link
// there must lead to a file (and heading) in the repository, and no text
// may send them to a path outside it (issue 16, "docs that stand alone").

var (
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// A relative path climbing out of its directory, in text or code.
	climbing = regexp.MustCompile(`(^|[\s(\x60"'=])((\.\./)+[A-Za-z0-9_./-]+)`)
	// Absolute paths of a developer's machine. (Deployment paths a user
	// creates, such as /etc/duet/…, are fine.)
	machinePath = regexp.MustCompile(`(^|[\s(\x60"'=:])(/(work|home|root|Users|tmp|mnt)/[^\s)\x60"']*|file://\S+)`)
	// Section citations of the documents that stayed outside (the protocol
	// is docs/protocol.md, cited as "protocol §N" with a link).
	outsideCite = regexp.MustCompile(`\b(PROTOCOL|reference) §`)
	heading     = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
)

func TestDocsStayInRepository(t *testing.T) {
	root := startDir // not ".": the embedded S3 gateway moves the working directory
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files := append([]string{filepath.Join(root, "README.md")}, docs...)
	if len(files) < 6 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		for _, p := range docProblems(root, f, string(raw)) {
			t.Errorf("%s: %s", rel, p)
		}
	}
}

// docProblems lists the links and paths in the Markdown text of file that
// lead outside root or nowhere.
func docProblems(root, file, text string) []string {
	var out []string
	for i, line := range strings.Split(text, "\n") {
		at := func(format string, args ...any) {
			out = append(out, fmt.Sprintf("line %d: ", i+1)+fmt.Sprintf(format, args...))
		}
		for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				if filepath.IsAbs(path) {
					at("link to an absolute path %s", target)
					continue
				}
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				if r, err := filepath.Rel(root, dest); err != nil || strings.HasPrefix(r, "..") {
					at("link outside the repository: %s", target)
					continue
				}
				if _, err := os.Stat(dest); err != nil {
					at("link to a file that is not in the repository: %s", target)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") {
				raw, err := os.ReadFile(dest)
				if err == nil && !hasAnchor(string(raw), anchor) {
					at("link to a heading that does not exist: %s", target)
				}
			}
		}
		for _, m := range climbing.FindAllStringSubmatch(line, -1) {
			dest := filepath.Join(filepath.Dir(file), filepath.FromSlash(m[2]))
			if r, err := filepath.Rel(root, dest); err != nil || strings.HasPrefix(r, "..") {
				at("path outside the repository: %s", m[2])
			} else if _, err := os.Stat(dest); err != nil {
				at("path to a file that is not in the repository: %s", m[2])
			}
		}
		if m := outsideCite.FindString(line); m != "" {
			at("cites a document that is not in the repository: %q", m)
		}
		for _, m := range machinePath.FindAllStringSubmatch(line, -1) {
			at("path on a developer's machine: %s", m[2])
		}
	}
	return out
}

// hasAnchor reports whether a heading of the Markdown text gets the anchor
// GitHub gives it: lower case, punctuation dropped, spaces to hyphens.
func hasAnchor(text, anchor string) bool {
	for _, m := range heading.FindAllStringSubmatch(text, -1) {
		if slug(m[1]) == anchor {
			return true
		}
	}
	return false
}

var linkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

func slug(h string) string {
	h = linkText.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 0x7f && unicode.IsLetter(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocsLinkCheckerCatches makes sure the checker above finds what it
// is for, so that a clean run means something.
func TestDocsLinkCheckerCatches(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "docs"), 0o755)
	os.WriteFile(filepath.Join(root, "docs", "a.md"), []byte("# A\n## 1. Connecting\n"), 0o644)
	file := filepath.Join(root, "docs", "b.md")
	cases := []struct {
		text string
		bad  bool
	}{
		{"see [the contract](../shared/PROTOCOL.md)", true},
		{"the contract is `../shared/PROTOCOL.md`", true},
		{"facts in `/work/shared/reference/tencent-im-rest.md`", true},
		{"see [x](/home/me/notes.md)", true},
		{"see [x](missing.md)", true},
		{"see [x](a.md#2-topics)", true},
		{"see [x](a.md#1-connecting) and [y](a.md) and [z](#b)", false},
		{"see [README](../README.md)", true}, // no README in this temp root
		{"see [Tencent](https://www.tencentcloud.com/)", false},
		{"keys in /etc/duet/key.p8", false},
		{"POST /v4/openim/sendmsg", false},
		{"## Connecting (PROTOCOL §1)", true},
		{"as [protocol §3](a.md#1-connecting)", false},
	}
	for _, c := range cases {
		got := docProblems(root, file, c.text+"\n# B\n")
		if (len(got) > 0) != c.bad {
			t.Errorf("%q: problems %v, want bad=%v", c.text, got, c.bad)
		}
	}
}

// TestDocsPushSaysWhatToReplace: the `push:` example of docs/push.md is
// made of stand-ins; the page lists, vendor by vendor, every line a user
// must replace (issue 16). A credential added to the example without a
// row entry fails here.
func TestDocsPushSaysWhatToReplace(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(startDir, "docs", "push.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "```yaml\n")
	block, _, _ := strings.Cut(rest, "```")
	var root struct {
		Push map[string]any `yaml:"push"`
	}
	if err := yaml.Unmarshal([]byte(block), &root); err != nil || len(root.Push) == 0 {
		t.Fatalf("no push example: %v", err)
	}
	// Working values a user may keep.
	keep := map[string]bool{"production": true, "concurrency": true, "category": true, "notify_level": true,
		"classification": true, "notice_msg_type": true}
	for vendor, v := range root.Push {
		section, ok := v.(map[string]any)
		if !ok {
			continue // grace, retry_base, max_attempts
		}
		row := ""
		for _, l := range strings.Split(string(doc), "\n") {
			if strings.HasPrefix(l, "| `"+vendor+"` |") {
				row = l
			}
		}
		if row == "" {
			t.Errorf("no row says which %s lines to replace", vendor)
			continue
		}
		for key := range section {
			if !keep[key] && !strings.Contains(row, "`"+key+"`") {
				t.Errorf("%s.%s is a stand-in, but the %s row does not name it: %s", vendor, key, vendor, row)
			}
		}
	}
}
