package main

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsMediaCurlUpload runs the upload command of docs/media.md as
// written, against a real server and its embedded S3 store, then the same
// command with another Content-Type, and checks what the page says of
// both (issue 16: "the exact curl for the upload, and what a wrong
// Content-Type returns").
func TestDocsMediaCurlUpload(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	doc, err := os.ReadFile(filepath.Join(startDir, "docs", "media.md"))
	if err != nil {
		t.Fatal(err)
	}
	var command string
	for _, l := range strings.Split(string(doc), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "curl -X PUT") {
			command = l
		}
	}
	if command == "" || !strings.Contains(command, "'Content-Type: image/png'") || !strings.Contains(command, "@cat.png") {
		t.Fatalf("no upload command for cat.png in docs/media.md: %q", command)
	}
	for _, claim := range []string{"HTTP/1.1 403 Forbidden", "<Code>SignatureDoesNotMatch</Code>", "exit code 22"} {
		if !strings.Contains(string(doc), claim) {
			t.Fatalf("docs/media.md no longer says %q", claim)
		}
	}

	srv, cfg, httpAddr := startOnLoopback(t, "media-docs-secret")
	defer srv.Close()
	dir := t.TempDir()
	var img bytes.Buffer
	png.Encode(&img, image.NewGray(image.Rect(0, 0, 64, 48)))
	if err := os.WriteFile(filepath.Join(dir, "cat.png"), img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	tk := restAdmin(t, cfg, httpAddr, "media/apply_upload", map[string]any{"Type": "image", "Size": img.Len(), "ContentType": "image/png", "FileName": "cat.png"})
	if tk["ErrorCode"] != 0.0 {
		t.Fatalf("apply_upload: %v", tk)
	}
	run := func(cmd string) (string, int) {
		c := exec.Command("sh", "-c", cmd)
		c.Dir = dir
		c.Env = append(os.Environ(), "UPLOAD_URL="+tk["UploadUrl"].(string))
		out, err := c.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}

	wrong := strings.Replace(command, "image/png", "image/jpeg", 1)
	if out, _ := run(strings.Replace(wrong, "curl ", "curl -s -i ", 1)); !strings.Contains(out, "HTTP/1.1 403 Forbidden") || !strings.Contains(out, "<Code>SignatureDoesNotMatch</Code>") {
		t.Errorf("wrong Content-Type answered:\n%s", out)
	}
	if _, code := run(strings.Replace(wrong, "curl ", "curl -s -f ", 1)); code != 22 {
		t.Errorf("curl -f exit code %d, want 22", code)
	}

	// The documented command, as written, after the refused one: the URL
	// still works.
	if out, code := run(command + " 2>/dev/null"); code != 0 || out != "" {
		t.Fatalf("documented command: exit %d, output %q", code, out)
	}
	if el := restAdmin(t, cfg, httpAddr, "media/commit_upload", map[string]any{"UUID": tk["UUID"]}); el["ErrorCode"] != 0.0 {
		t.Fatalf("commit after the documented upload: %v", el)
	}
}
