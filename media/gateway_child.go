//go:build !nos3gateway

package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

// embeddedGateway: this build links the gateway (build tag nos3gateway
// leaves it out, and with it most of the binary's third-party packages).
const embeddedGateway = true

// init turns the process into the gateway child when its parent asked for
// one (gateway.go): before main, and before a test binary's own flags, so
// that duet and every test binary that links this package can be the child.
func init() {
	if len(os.Args) < 2 || os.Args[1] != gatewayCommand || os.Getenv(gatewayChildEnv) != "1" {
		return
	}
	// The report goes to the real stdout; everything else the gateway
	// prints (versitygw writes notices with fmt.Println) goes to stderr,
	// which the parent logs.
	report := os.Stdout
	os.Stdout = os.Stderr
	err := runGatewayChild(os.Args[2:], report)
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3 gateway:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// gatewayKeys is dir/s3.key.
type gatewayKeys struct {
	AccessKey string `json:"AccessKey"`
	SecretKey string `json:"SecretKey"`
	// Addr is the port of the last run, taken again when free so that
	// upload URLs handed out before a restart keep working.
	Addr string `json:"Addr,omitempty"`
}

// runGatewayChild serves S3 from dir/objects until stdin reaches EOF or
// SIGTERM comes. Start failures are sent on report as well as returned.
func runGatewayChild(args []string, report *os.File) error {
	fl := flag.NewFlagSet(gatewayCommand, flag.ContinueOnError)
	dir := fl.String("dir", "", "the gateway's directory (objects, key file)")
	listen := fl.String("listen", "", "the loopback address to listen on (default: the last run's, else any free port)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	// The parent decides when the gateway stops: Ctrl-C in a terminal
	// reaches the whole process group, and the parent may still be
	// finishing uploads through the gateway.
	signal.Ignore(os.Interrupt, syscall.SIGHUP)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin) // EOF: the parent closed it or is gone
		cancel()
	}()
	go func() {
		select {
		case <-term:
			cancel()
		case <-ctx.Done():
		}
	}()

	rep, done, err := startGatewayServer(ctx, *dir, *listen)
	if err != nil {
		rep.Error = err.Error()
	}
	if werr := json.NewEncoder(report).Encode(rep); werr != nil && err == nil {
		err = werr
	}
	report.Close()
	if err != nil {
		return err
	}
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// startGatewayServer starts versitygw over its posix backend in dir/objects
// and returns once it accepts connections. The backend changes this
// process's working directory to dir/objects: this runs only in the child.
func startGatewayServer(ctx context.Context, dir, listen string) (gatewayReport, <-chan error, error) {
	var rep gatewayReport
	if dir == "" {
		return rep, nil, errors.New("--dir is required")
	}
	root := filepath.Join(dir, "objects")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return rep, nil, fmt.Errorf("gateway dir: %w", err)
	}
	keyFile := filepath.Join(dir, "s3.key")
	keys, err := gatewayCredentials(keyFile)
	if err != nil {
		return rep, nil, err
	}
	addr := listen
	if addr == "" {
		if addr, err = freeLoopbackPort(keys.Addr); err != nil {
			return rep, nil, err
		}
	}
	if addr != keys.Addr {
		keys.Addr = addr
		raw, _ := json.Marshal(keys)
		if err := os.WriteFile(keyFile, raw, 0o600); err != nil {
			return rep, nil, err
		}
	}
	var ms meta.MetadataStorer = meta.XattrMeta{}
	// The commit copies each upload to its final name (CopyObject); left
	// at zero, the backend refuses every copy despite its doc's 5 GiB.
	opts := posix.PosixOpts{CopyObjectThreshold: 5 << 30}
	if err := (meta.XattrMeta{}).Test(root); err != nil {
		// Filesystems without user xattrs keep metadata in a side directory,
		// which must lie outside the object root.
		side := filepath.Join(dir, "meta")
		if err := os.MkdirAll(side, 0o700); err != nil {
			return rep, nil, err
		}
		sc, err := meta.NewSideCar(side)
		if err != nil {
			return rep, nil, fmt.Errorf("gateway metadata: %w", err)
		}
		ms, opts.SideCarDir = sc, side
	}
	be, err := posix.New(root, ms, opts) // os.Chdir(root)
	if err != nil {
		return rep, nil, fmt.Errorf("gateway backend: %w", err)
	}
	gcfg := &embedgw.Config{
		RootUserAccess:    keys.AccessKey,
		RootUserSecret:    keys.SecretKey,
		Ports:             []string{addr},
		MaxConnections:    1024,
		MaxRequests:       512,
		MultipartMaxParts: 10000,
		Quiet:             true,
		KeepAlive:         true,
		// Browsers upload with the presigned PUT from another origin
		// (the web chat, docs/web.md). The URL is the credential, so
		// any origin may use it, as with MinIO's default.
		CORSAllowOrigin: "*",
	}
	// The gateway's single-account IAM, given rather than left to
	// versitygw: left to it, it prints "No IAM service configured, enabling
	// single account mode" on every start (issue 16).
	gcfg.IAMService = auth.NewIAMServiceSingle(gcfg.IamOpts().RootAccount)
	done := make(chan error, 1)
	go func() {
		err := embedgw.RunVersityGW(ctx, be, gcfg)
		be.Shutdown()
		done <- err
	}()
	// Ready once it accepts connections; an early return is a start failure.
	for {
		select {
		case err := <-done:
			if err == nil || errors.Is(err, context.Canceled) {
				err = errors.New("stopped while starting")
			}
			return rep, nil, err
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the listener; the parent bounds the wait
	}
	return gatewayReport{Addr: addr, AccessKey: keys.AccessKey, SecretKey: keys.SecretKey}, done, nil
}

func gatewayCredentials(path string) (gatewayKeys, error) {
	var k gatewayKeys
	raw, err := os.ReadFile(path)
	if err == nil {
		if err := json.Unmarshal(raw, &k); err != nil || k.AccessKey == "" || k.SecretKey == "" {
			return k, fmt.Errorf("%s is not a valid key file", path)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	a, s := make([]byte, 10), make([]byte, 30)
	if _, err := rand.Read(a); err != nil {
		return k, err
	}
	if _, err := rand.Read(s); err != nil {
		return k, err
	}
	k = gatewayKeys{AccessKey: "DUET" + hex.EncodeToString(a), SecretKey: hex.EncodeToString(s)}
	raw, _ = json.Marshal(k)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return k, err
	}
	return k, nil
}

// freeLoopbackPort returns prefer when it can be listened on, else a free
// loopback port.
func freeLoopbackPort(prefer string) (string, error) {
	if prefer != "" {
		if ln, err := net.Listen("tcp", prefer); err == nil {
			ln.Close()
			return prefer, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}
