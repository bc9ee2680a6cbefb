package broker_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/logcapture"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/media"
)

// clusterMediaURL is the nodes' shared --media-url: what devices reach
// the service at (a load balancer in front of the nodes' HTTP listeners).
// The test sends each download to one node itself (onNode).
const clusterMediaURL = "http://im.example.com:8080"

// startMediaCluster starts three nodes with media on one shared S3 (the
// embedded gateway, started by the test as an operator runs MinIO), the
// background work paced fast, each node logging into its own buffer.
// adjust changes every node's settings further.
func startMediaCluster(t *testing.T, adjust ...func(*srvpkg.Config)) ([]*testServer, []*logcapture.Buffer) {
	t.Helper()
	gw, err := media.StartGateway(t.TempDir(), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	logs := make([]*logcapture.Buffer, 3)
	i := 0
	nodes := startCluster(t, 3, func(c *srvpkg.Config) {
		c.NoMedia = false
		c.S3Endpoint, c.S3AccessKey, c.S3SecretKey, c.S3Bucket = gw.S3.Endpoint, gw.S3.AccessKey, gw.S3.SecretKey, gw.S3.Bucket
		c.S3Secure, c.S3PublicEndpoint = gw.S3.Secure, gw.S3.PublicEndpoint
		c.MediaURL = clusterMediaURL
		c.MediaCleanEvery, c.MediaArchiveEvery = 50*time.Millisecond, 50*time.Millisecond
		c.RESTRate = -1
		c.Log, logs[i] = logcapture.New(slog.LevelInfo)
		i++
		for _, f := range adjust {
			f(c)
		}
	})
	return nodes, logs
}

// onNode is a media link sent to node n's HTTP listener.
func onNode(t *testing.T, n *testServer, link string) string {
	t.Helper()
	path, ok := strings.CutPrefix(link, clusterMediaURL)
	if !ok {
		t.Fatalf("link %q is not under the shared media URL %s", link, clusterMediaURL)
	}
	return "http://" + n.srv.HTTPAddr() + path
}

// restOn is an app back-end's REST call to node n as the admin.
func restOn(n *testServer, cmd, body string) map[string]any {
	rs := &restServer{testServer: n, rest: &httptest.Server{URL: "http://" + n.srv.HTTPAddr()}}
	return rs.call(cmd, body)
}

func smallPNG() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 400, 300))
	for x := 0; x < 400; x++ {
		img.Set(x, x%300, color.NRGBA{0, 0, 255, 255})
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// Media in cluster mode on a shared S3 (docs/cluster.md §14.3): alice, on
// a node that does not own the data, applies for, uploads and commits an
// image (the commands run on the owner) and sends it; bob, on the third
// node, receives it and downloads it there and on the owner — the
// download's grant, a write, reaches the owner from a node that cannot
// write. A link used on another node the moment the send is acknowledged
// works (the node catches up with the log before it refuses). A refused
// upload answers its code over REST on a node that does not own the data.
func TestClusterMedia(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes, logs := startMediaCluster(t)
	o := clustertest.Owner(t, servers(nodes))
	a, b := nodes[(o+1)%3], nodes[(o+2)%3] // neither owns the data
	recipients := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}
	nodes[o].users(append([]string{"alice", "bob", "carol"}, recipients...)...)
	clustertest.Settle(t, servers(nodes))

	alice := a.connect("alice", connectOpts{v5: true})
	bob := b.connect("bob", connectOpts{})
	alice.syncComplete()
	bob.syncComplete()

	data := smallPNG()
	el := alice.uploadMedia("image", "image/png", data)
	content := map[string]any{"UUID": el["UUID"], "ImageFormat": el["ImageFormat"], "ImageInfoArray": el["ImageInfoArray"]}
	elem := map[string]any{"MsgType": "TIMImageElem", "MsgContent": content}
	alice.send("bob", 1, elem)
	msg := bob.nextMsg()
	if msg.str("From_Account") != "alice" || !strings.Contains(fmt.Sprint(msg["MsgBody"]), el.str("UUID")) {
		t.Fatalf("bob got %v, want alice's image %s", msg, el.str("UUID"))
	}
	var orig, thumb string
	for _, info := range el["ImageInfoArray"].([]any) {
		u := info.(map[string]any)["URL"].(string)
		switch {
		case strings.HasSuffix(u, "/orig"):
			orig = u
		case strings.HasSuffix(u, "/thumb"):
			thumb = u
		}
	}
	if orig == "" || thumb == "" {
		t.Fatalf("commit_upload answered %v: no original or thumbnail link", el)
	}

	// bob downloads on his node (no owner: the grant is forwarded), then
	// on the owner; carol, who was not sent it, is refused on both.
	uuid := el.str("UUID")
	for _, n := range []*testServer{b, nodes[o]} {
		if st, body := fetch(t, onNode(t, n, orig), "bob"); st != 200 || !bytes.Equal(body, data) {
			t.Fatalf("bob's download of the original: %d, %d bytes (want 200, the %d bytes alice uploaded)", st, len(body), len(data))
		}
		if st, _ := fetch(t, onNode(t, n, thumb), "bob"); st != 200 {
			t.Fatalf("bob's download of the thumbnail: %d", st)
		}
		if st, body := fetch(t, onNode(t, n, orig), "carol"); st != http.StatusForbidden {
			t.Fatalf("carol's download: %d %s, want 403", st, body)
		}
	}
	// The grant is in the log: every node's view has it.
	clustertest.Settle(t, servers(nodes))
	for i, n := range nodes {
		if ok, err := n.store.Granted(uuid, "bob"); !ok || err != nil {
			t.Fatalf("node %d has no grant of %s to bob (%v)", i, uuid, err)
		}
	}

	// Sent through the owner, used on another node at once: that node
	// may not have applied the send yet when the link arrives.
	for i, r := range recipients {
		body, _ := json.Marshal(map[string]any{"From_Account": "alice", "To_Account": r, "MsgRandom": 100 + i, "MsgBody": []any{elem}})
		if rep := restOn(nodes[o], "openim/sendmsg", string(body)); rep["ErrorCode"] != 0.0 {
			t.Fatalf("sendmsg to %s: %v", r, rep)
		}
		if st, body := fetch(t, onNode(t, b, thumb), r); st != 200 {
			t.Fatalf("%s's download on another node right after the send: %d %s", r, st, body)
		}
	}

	// The App admin's upload over REST, applied for on one node that does
	// not own the data and committed on the other: each answer is the
	// owner's, and each node's view has the record when it answers.
	tk := event(restOn(a, "media/apply_upload", fmt.Sprintf(`{"Type":"file","Size":%d,"ContentType":"text/plain","FileName":"n.txt"}`, len("notes"))))
	if tk.str("ActionStatus") != "OK" || tk.str("UUID") == "" {
		t.Fatalf("REST apply_upload on a node that does not own the data: %v", tk)
	}
	if u, err := a.store.GetUpload(tk.str("UUID")); err != nil || u.Owner != "administrator" {
		t.Fatalf("the answering node's view lacks the upload record: %+v, %v", u, err)
	}
	putUpload(t, tk, []byte("notes"))
	file := event(restOn(b, "media/commit_upload", fmt.Sprintf(`{"UUID":%q}`, tk.str("UUID"))))
	if file.str("ActionStatus") != "OK" || file.str("Url") != clusterMediaURL+"/media/"+tk.str("UUID")+"/orig" {
		t.Fatalf("REST commit_upload on the other node: %v", file)
	}
	if u, err := b.store.GetUpload(tk.str("UUID")); err != nil || !u.Committed {
		t.Fatalf("the answering node's view lacks the commit: %+v, %v", u, err)
	}

	// A refused upload, over REST on a node that does not own the data:
	// the owner's Tencent code and ErrorInfo.
	for _, c := range []struct {
		name, body string
		code       int
	}{
		{"over the size limit", `{"Type":"image","Size":999999999999,"ContentType":"image/png"}`, media.CodeRefused},
		{"unknown type", `{"Type":"hologram","Size":10}`, media.CodeRefused},
		{"no size", `{"Type":"image"}`, media.CodeBadRequest},
	} {
		rep := restOn(a, "media/apply_upload", c.body)
		if rep["ActionStatus"] != "FAIL" || rep["ErrorCode"] != float64(c.code) || rep["ErrorInfo"] == "" {
			t.Errorf("%s: %v, want FAIL with %d", c.name, rep, c.code)
		}
	}

	// The background work runs on the owner only, quietly elsewhere.
	for i, l := range logs {
		if bad := l.Matching("media background task failed"); len(bad) > 0 {
			t.Errorf("node %d: %s", i, bad[0])
		}
	}
}

// One node archives each hour (docs/cluster.md §14.4): with one partition,
// the owner. The others skip the archiver without a word; when the owner
// leaves, the node that takes the data over archives from then on — here
// an hour that a late import made stale again.
func TestClusterArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes, logs := startMediaCluster(t)
	o := clustertest.Owner(t, servers(nodes))
	a := nodes[(o+1)%3]
	nodes[o].users("alice", "bob")
	clustertest.Settle(t, servers(nodes))

	hour := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	importAt := func(n *testServer, at time.Time, text string, random int) {
		t.Helper()
		body := fmt.Sprintf(`{"From_Account":"alice","To_Account":"bob","MsgRandom":%d,"MsgTimeStamp":%d,"SyncFromOldSystem":2,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":%q}}]}`,
			random, at.Unix(), text)
		wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
			// 20005 while the data changes hands.
			if rep := restOn(n, "openim/importmsg", body); rep["ErrorCode"] != 0.0 {
				return fmt.Errorf("importmsg %q: %v", text, rep)
			}
			return nil
		})
	}
	// archived waits until hour's archive, read through node n, holds want.
	archived := func(n *testServer, want ...string) {
		t.Helper()
		wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
			rep := restOn(n, "open_msg_svc/get_history", fmt.Sprintf(`{"ChatType":"C2C","MsgTime":%q}`, hour.Format("2006010215")))
			files, _ := rep["File_List"].([]any)
			if rep["ErrorCode"] != 0.0 || len(files) != 1 {
				return fmt.Errorf("get_history: %v", rep)
			}
			resp, err := http.Get(files[0].(map[string]any)["URL"].(string))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				return err
			}
			raw, _ := io.ReadAll(zr)
			for _, w := range want {
				if !strings.Contains(string(raw), w) {
					return fmt.Errorf("the archive lacks %q: %s", w, raw)
				}
			}
			return nil
		})
	}
	importAt(a, hour.Add(10*time.Minute), "first", 1)
	archived(a, "first")
	clustertest.Settle(t, servers(nodes))
	for i, n := range nodes {
		if rec, err := n.store.ArchivedHour(hour.Unix()); rec == nil || err != nil {
			t.Fatalf("node %d's view has no record of the archived hour (%v)", i, err)
		}
	}
	archivers := func() []int {
		var out []int
		for i, l := range logs {
			if len(l.Matching("media: this node runs the archiver")) > 0 {
				out = append(out, i)
			}
		}
		return out
	}
	if got := archivers(); len(got) != 1 || got[0] != o {
		t.Fatalf("nodes %v run the archiver, want only the owner %d", got, o)
	}

	// The owner leaves; the node that takes over archives the hour again
	// with a message imported into it after it was archived.
	nodes[o].stop()
	survivors := []*testServer{nodes[(o+1)%3], nodes[(o+2)%3]}
	next := clustertest.Owner(t, servers(survivors))
	importAt(a, hour.Add(20*time.Minute), "late", 2)
	archived(a, "first", "late")
	if got := archivers(); len(got) != 2 || !(got[0] == o || got[1] == o) {
		t.Fatalf("nodes %v ran the archiver, want the old owner %d and the new one", got, o)
	}
	if l := logs[(o+1+next)%3]; len(l.Matching("media: this node runs the archiver")) == 0 {
		t.Fatalf("the new owner never ran the archiver")
	}
	for i, l := range logs {
		if bad := l.Matching("media background task failed"); len(bad) > 0 {
			t.Errorf("node %d: %s", i, bad[0])
		}
	}
}
