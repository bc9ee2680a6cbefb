package media_test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/duet-im/duet/media"
)

// A gateway start that fails leaves the process as it found it: the
// working directory (which the posix backend changes in the gateway's child
// process) is not moved into the failed gateway's object root, and the
// child's reason is the error. Here the key file cannot be rewritten with a
// new port (its remembered port is taken and the file is immutable).
func TestGatewayStartFailureKeepsWorkingDirectory(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "s3.key")
	raw, _ := json.Marshal(map[string]string{"AccessKey": "DUETTEST", "SecretKey": "secret", "Addr": busy.Addr().String()})
	if err := os.WriteFile(keyFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Root writes through file modes; only the immutable flag stops it.
	if out, err := exec.Command("chattr", "+i", keyFile).CombinedOutput(); err != nil {
		t.Skipf("cannot make the key file immutable here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", keyFile).Run() })
	before, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(before) }) // whatever happens, later tests run from here
	g, err := media.StartGateway(dir, "", nil)
	if err == nil {
		g.Close()
		t.Fatal("the gateway started with a key file it could not update")
	}
	// The child's reason reaches the caller.
	if !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("the start failure does not name the key file: %v", err)
	}
	if now, _ := os.Getwd(); now != before {
		t.Fatalf("a failed start left the working directory at %s (was %s)", now, before)
	}
}
